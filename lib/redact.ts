/**
 * ioredis puts the failed command on its reply errors (`error.command = { name, args }`), and an
 * enumerable property is printed by pino's error serializer and by `util.inspect`. The arguments hold
 * what must not reach a log: the password of a `HELLO … AUTH` (the same error object rejects every
 * queued command when the login fails), and the kit's script arguments (session JSON, stored response
 * bodies, tags). So every error the kit logs, emits or rejects with goes through here first, and keeps
 * only the command's name and how many arguments it had, and the arguments Redis repeats in some
 * replies are taken out of the message.
 */
export function withoutCommandArgs<T>(error: T): T {
  scrub(error, 0, new Set());
  return error;
}

const LINKS = ['cause', 'lastNodeError'] as const;
const LISTS = ['previousErrors', 'errors'] as const;

function scrub(value: unknown, depth: number, seen: Set<object>): void {
  if (typeof value !== 'object' || value === null || depth > 4 || seen.has(value)) return;
  seen.add(value);
  const error = value as Record<string, unknown>;
  const command = error.command as { name?: unknown; args?: unknown } | undefined;
  if (command && typeof command === 'object' && Array.isArray(command.args) && !WITHHELD.has(command)) {
    const withheld = { name: command.name, args: [`(${command.args.length} arguments withheld)`] };
    WITHHELD.add(withheld);
    try {
      error.command = withheld;
    } catch {
      // A frozen error: nothing the kit can do, and nothing worth failing over.
    }
  }
  // Redis itself repeats a refused command's first arguments in its reply (a renamed EVALSHA, an
  // unknown command): `ERR unknown command 'evalsha', with args beginning with: '…' '1' 'erk:rl:{key}…'`.
  for (const field of ['message', 'stack'] as const) {
    const text = error[field];
    if (typeof text === 'string' && ECHOED.test(text)) {
      try {
        error[field] = text.replace(ECHOED_ALL, ECHO_WITHHELD);
      } catch {
        // As above.
      }
    }
  }
  for (const link of LINKS) scrub(error[link], depth + 1, seen);
  for (const list of LISTS) {
    const items = error[list];
    if (Array.isArray(items)) for (const item of items.slice(0, 16)) scrub(item, depth + 1, seen);
  }
}

const WITHHELD = new WeakSet<object>();
const ECHOED = /, with args beginning with: /;
const ECHOED_ALL = /, with args beginning with: [^\n]*/g;
const ECHO_WITHHELD = ', with args beginning with: (withheld)';
