/**
 * Errors the server answers with. The body carries both APIs' shapes at once:
 * Mistral's flat `{object: "error", message, type, param, code}` and OpenAI's
 * `{error: {message, type, param, code}}`, so each client finds the message where it looks.
 */
export class ApiError extends Error {
  override readonly name = 'ApiError';

  constructor(
    readonly status: number,
    message: string,
    /** The request field at fault ("messages[1].content", "temperature"), or null. */
    readonly param: string | null = null,
    readonly type = status === 401 ? 'authentication_error' : status === 429 ? 'rate_limit_error' : status >= 500 ? 'server_error' : 'invalid_request_error',
    readonly code: string | null = null,
  ) {
    super(message);
  }

  body(): Record<string, unknown> {
    const e = { message: this.message, type: this.type, param: this.param, code: this.code };
    return { object: 'error', ...e, error: e };
  }
}

/** 400 naming the field: `field: what is wrong`. */
export function badField(param: string, what: string): ApiError {
  return new ApiError(400, `${param}: ${what}`, param);
}
