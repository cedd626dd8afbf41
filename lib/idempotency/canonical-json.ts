// The canonical JSON of a parsed request body, which the default fingerprint hashes (fingerprint.ts)
// and apps may build their own fingerprint on: object keys sorted, whatever the body's depth.

/**
 * JSON with the keys of every plain object sorted, so key order does not change the result: what
 * `JSON.stringify` gives with a replacer that sorts plain objects' keys (`toJSON` honoured, cycles
 * and BigInts refused with its TypeError). That is how it is computed, natively, for every body but
 * one nested deeper than the call stack goes (24 KB of `[` reach 12,000 levels): for that one, the
 * stack-free {@link canonicalJsonDeep} writes the same text.
 */
export function canonicalJson(value: unknown): string {
  try {
    return JSON.stringify(value, sortPlainKeys) ?? 'undefined';
  } catch (error) {
    if (!(error instanceof RangeError)) throw error;
    return canonicalJsonDeep(value);
  }
}

/** The replacer of {@link canonicalJson}: a plain object as a copy with its keys sorted. */
function sortPlainKeys(_key: string, value: unknown): unknown {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return value;
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) return value;
  const record = value as Record<string, unknown>;
  // fromEntries defines (never sets) each key, so an own "__proto__" stays data; a plain object then
  // enumerates "2" before "10" before "a", as canonicalJsonDeep writes them.
  return Object.fromEntries(
    Object.keys(record)
      .sort()
      .map((key) => [key, record[key]]),
  );
}

/**
 * {@link canonicalJson} written without recursion, for bodies nested too deep for the call stack
 * (a recursive serializer would answer them with a RangeError). About 15 times slower.
 */
export function canonicalJsonDeep(value: unknown): string {
  const out: string[] = [];
  const open = new Set<object>();
  // Work items, last first: text to emit, a value to write (already past toJSON), or a container
  // to close (leaving the cycle check).
  type Item = string | { value: unknown } | { close: object };
  const top = resolve(value, '');
  if (!writable(top)) return 'undefined';
  const stack: Item[] = [{ value: top }];
  while (stack.length > 0) {
    const item = stack.pop()!;
    if (typeof item === 'string') {
      out.push(item);
      continue;
    }
    if ('close' in item) {
      open.delete(item.close);
      continue;
    }
    const v = unbox(item.value);
    if (v === null || typeof v !== 'object') {
      out.push(scalar(v));
      continue;
    }
    if (open.has(v)) throw new TypeError('Converting circular structure to JSON');
    open.add(v);
    const parts: Item[] = [];
    if (Array.isArray(v)) {
      parts.push('[');
      // By index, not forEach: a hole is written as null.
      for (let i = 0; i < v.length; i++) {
        if (i > 0) parts.push(',');
        const resolved = resolve(v[i], String(i));
        parts.push(writable(resolved) ? { value: resolved } : 'null');
      }
      parts.push(']');
    } else {
      const record = v as Record<string, unknown>;
      const proto = Object.getPrototypeOf(v);
      let keys = Object.keys(record);
      // Sorted, then in the order a plain object built from them enumerates ("2" before "10" before
      // "a"): the output records stored before this version were fingerprinted with.
      if (proto === Object.prototype || proto === null)
        keys = Object.keys(Object.fromEntries(keys.sort().map((k) => [k, 0])));
      parts.push('{');
      let first = true;
      for (const key of keys) {
        const resolved = resolve(record[key], key);
        if (!writable(resolved)) continue;
        parts.push(`${first ? '' : ','}${JSON.stringify(key)}:`, { value: resolved });
        first = false;
      }
      parts.push('}');
    }
    parts.push({ close: v });
    for (let i = parts.length - 1; i >= 0; i--) stack.push(parts[i]!);
  }
  return out.join('');
}

/** A value as JSON.stringify sees it: after its `toJSON(key)`, if it has one. */
function resolve(value: unknown, key: string): unknown {
  if (value !== null && (typeof value === 'object' || typeof value === 'bigint')) {
    const toJSON = (value as { toJSON?: unknown }).toJSON;
    if (typeof toJSON === 'function') return toJSON.call(value, key);
  }
  return value;
}

/** Whether JSON.stringify writes the value (it leaves out undefined, functions and symbols). */
function writable(value: unknown): boolean {
  return value !== undefined && typeof value !== 'function' && typeof value !== 'symbol';
}

/** Number, String and Boolean objects are written as their primitive, as JSON.stringify does. */
function unbox(value: unknown): unknown {
  if (value instanceof Number || value instanceof String || value instanceof Boolean) return value.valueOf();
  return value;
}

function scalar(value: unknown): string {
  if (typeof value === 'bigint') throw new TypeError('Do not know how to serialize a BigInt');
  return JSON.stringify(value) ?? 'null';
}
