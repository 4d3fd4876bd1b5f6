//! JSON Merge Patch (RFC 7386), as the server's `update` messages carry it.
//!
//! A patch that is an object merges key by key: `null` deletes the key (the
//! protocol reads a missing key as null, SPEC §14), an object recurses, any
//! other value (arrays included) replaces. A patch that is not an object
//! replaces the target whole.

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

export function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Applies `patch` to `target` and returns the result. Objects of `target`
 * are updated in place (the channel copy is large and patches are small);
 * the return value must be used, since a non-object target is replaced.
 */
export function applyMergePatch(target: Json | undefined, patch: Json): Json {
  if (!isObject(patch)) return clone(patch);
  const out: JsonObject = isObject(target) ? target : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) {
      delete out[key];
    } else if (isObject(value)) {
      out[key] = applyMergePatch(out[key], value);
    } else {
      out[key] = clone(value);
    }
  }
  return out;
}

/** A patch's values are copied so the copy never aliases a message. */
function clone(v: Json): Json {
  if (Array.isArray(v)) return v.map(clone);
  if (isObject(v)) {
    const o: JsonObject = {};
    for (const [k, x] of Object.entries(v)) o[k] = clone(x);
    return o;
  }
  return v;
}
