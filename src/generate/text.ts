/**
 * Turning a stream of ids into a stream of text.
 *
 * Decoding token by token is wrong in two ways: a character may span several byte
 * tokens (`<0xE2><0x82><0xAC>` is "€"), and SentencePiece drops the leading space of the
 * first piece it decodes ("▁Paris" alone is "Paris", after "is" it is " Paris"). So each
 * new id is decoded in a short window that starts with the tokens printed last (they give
 * the spacing): the window's text minus what those tokens alone decode to is new.
 * While the window ends in an incomplete character (U+FFFD) the text is held back and the
 * window grows; once printed, the window moves on. Each push decodes a few ids, so a
 * stream of n tokens costs O(n), not the O(n²) of re-decoding everything each time.
 *
 *   context "is", window [is ▁Pa] → "is Pa" − "is" = " Pa"     print " Pa"
 *                 window [▁Pa ris] → "Paris" − "Pa"             print "ris"
 *                 window [ris <0xE2>] → "ris\uFFFD"             hold
 *                 window [ris <0xE2><0x82><0xAC>] → "ris€"       print "€"
 */
export type Decode = (ids: readonly number[]) => string;

export class TextStream {
  /** The context, then every pushed id. */
  private readonly ids: number[];
  /** The window is ids[from..]; ids[from..printedTo) were printed by the last print (they give the spacing). */
  private from = 0;
  private printedTo: number;
  private printed = '';

  /** @param context the prompt's last token(s), decoded before the new ones for their spacing */
  constructor(private readonly decode: Decode, context: readonly number[] = []) {
    this.ids = [...context];
    this.printedTo = this.ids.length;
  }

  /** Everything generated so far, as text (an incomplete character at the end included). */
  get text(): string {
    return this.printed + this.pending();
  }

  /** Adds one id; returns the text that became final with it (possibly ''). */
  push(id: number): string {
    this.ids.push(id);
    const text = this.pending();
    if (text === '' || text.endsWith('\uFFFD')) return ''; // wait for the rest of the character
    return this.take(text);
  }

  /** Whatever is still held back (an incomplete character at the very end). */
  flush(): string {
    return this.take(this.pending());
  }

  /** The window's text beyond what its printed part decodes to. */
  private pending(): string {
    if (this.printedTo === this.ids.length) return '';
    const before = this.from === this.printedTo ? '' : this.decode(this.ids.slice(this.from, this.printedTo));
    const all = this.decode(this.ids.slice(this.from));
    return all.length > before.length ? all.slice(before.length) : '';
  }

  /** Marks `text` printed; the next window starts at the tokens that printed it (whole characters). */
  private take(text: string): string {
    this.printed += text;
    this.from = this.printedTo;
    this.printedTo = this.ids.length;
    return text;
  }
}
