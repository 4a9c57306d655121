// The demo's output: whole lines, plus, on a terminal, one status line (a
// progress bar) kept below them and redrawn in place. Every line the demo
// prints goes through here, so that none lands in the middle of the bar.

/** Erases the current terminal line and returns to its start. */
const CLEAR_LINE = '\r\x1b[K';

export class DemoOutput {
  #status: string | null = null;

  constructor(readonly stream: NodeJS.WriteStream = process.stdout) {}

  /** Whether a status line can be redrawn in place (stdout is a terminal). */
  get tty(): boolean {
    return this.stream.isTTY;
  }

  /** Prints a line (above the status line, if one is shown). */
  line(text: string): void {
    if (this.#status === null) this.stream.write(`${text}\n`);
    else this.stream.write(`${CLEAR_LINE}${text}\n${this.#fit(this.#status)}`);
  }

  /** Shows `text` as the status line, or removes it (`null`); nothing unless on a terminal. */
  status(text: string | null): void {
    if (!this.tty || (text === null && this.#status === null)) return;
    this.#status = text;
    this.stream.write(`${CLEAR_LINE}${text === null ? '' : this.#fit(text)}`);
  }

  /** Cut to the terminal's width: a line that wraps could not be redrawn in place. */
  #fit(text: string): string {
    const columns = this.stream.columns > 1 ? this.stream.columns : 80;
    return text.length < columns ? text : text.slice(0, columns - 1);
  }
}
