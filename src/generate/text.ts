/**
 * Turning a stream of ids into a stream of text.
 *
 * Decoding token by token is wrong in two ways: a character may span several byte
 * tokens (`<0xE2><0x82><0xAC>` is "€"), and SentencePiece drops the leading space of the
 * first piece it decodes ("▁Paris" alone is "Paris", after "is" it is " Paris"). So each
 * time we decode the prompt's last token plus everything generated, cut off what the
 * prompt's token alone decodes to, and print only what is new, holding back while the
 * text ends in an incomplete character (U+FFFD).
 *
 *   context "is", ids ▁Pa → "is Pa" − "is" = " Pa"          print " Pa"
 *                 ids ▁Pa ris → " Paris"                     print "ris"
 *                 ids ▁Pa ris <0xE2> → " Paris\uFFFD"        hold
 *                 … <0xE2><0x82><0xAC> → " Paris€"          print "€"
 */
export type Decode = (ids: readonly number[]) => string;

export class TextStream {
  private readonly ids: number[] = [];
  private readonly prefix: string;
  private printed = 0;

  /** @param context the prompt's last token(s), decoded before the new ones for their spacing */
  constructor(private readonly decode: Decode, private readonly context: readonly number[] = []) {
    this.prefix = context.length > 0 ? decode(context) : '';
  }

  /** Everything generated so far, as text. */
  get text(): string {
    const all = this.decode([...this.context, ...this.ids]);
    return all.startsWith(this.prefix) ? all.slice(this.prefix.length) : this.decode(this.ids);
  }

  /** Adds one id; returns the text that became final with it (possibly ''). */
  push(id: number): string {
    this.ids.push(id);
    const text = this.text;
    if (text.endsWith('\uFFFD')) return ''; // wait for the rest of the character
    return this.take(text);
  }

  /** Whatever is still held back (an incomplete character at the very end). */
  flush(): string {
    return this.take(this.text);
  }

  private take(text: string): string {
    const out = text.slice(this.printed);
    this.printed = Math.max(this.printed, text.length);
    return out;
  }
}
