/**
 * predict on the store: rate profiles and bounded memories of recently seen members, each an atomic
 * one-key operation (a Lua script and its in-memory twin), and the functions the plugin and its
 * command call.
 * @module
 */
import { defineAtomicOperation, invalidAtomicArgument, type Store } from 'themis-milter';
import { profileCompute, profileTtl, validateProfileRequest } from './profile.ts';
import { PROFILE_UPDATE_LUA, parseProfileReply, profileUpdateArgs } from './profile-lua.ts';
import { SEEN_ADD_LUA, parseSeenReply, seenCompute, validateSeenAdd, type SeenAddOptions, type SeenAddResult } from './seen.ts';
import type { ProfileRequest, ProfileResult } from './types.ts';

/** One subject's profile update or inspection ({@link profileCompute}). */
export const PROFILE_UPDATE = defineAtomicOperation({
  name: 'PREDICT.PROFILE',
  type: 'hash',
  lua: PROFILE_UPDATE_LUA,
  validate: (r: ProfileRequest, i) => validateProfileRequest(r, i),
  encode: (r, now) => profileUpdateArgs(r, now),
  decode: (reply, r): ProfileResult => parseProfileReply(r, reply),
  memory(key, r, now) {
    const { result, fields } = profileCompute(key.exists ? key.fields : undefined, r, now);
    if (!r.inspect) {
      for (const [field, value] of fields) key.fields.set(field, value);
      key.pexpire(profileTtl(r));
    }
    return result;
  },
});

/** What {@link SEEN_ADD} takes: the members, their width (from the validation) and the options. */
interface SeenArgs {
  members: readonly string[];
  options: SeenAddOptions;
}

/** Remembers members and tells which were new ({@link seenCompute}). */
export const SEEN_ADD = defineAtomicOperation({
  name: 'PREDICT.SEEN',
  type: 'string',
  lua: SEEN_ADD_LUA,
  validate(a: SeenArgs) {
    if (validateSeenAdd(a.members, a.options) === 0) throw invalidAtomicArgument('PREDICT.SEEN', 'members must not be empty');
  },
  encode: (a) => [a.members[0].length, a.options.keep, Math.ceil(a.options.ttlMs), a.options.inspect ? 1 : 0, ...a.members],
  decode: (reply): SeenAddResult => parseSeenReply(reply),
  memory(key, a) {
    const { text, result } = seenCompute(key.get(), a.members, a.options.keep, a.members[0].length);
    if (!a.options.inspect) {
      key.set(text);
      key.pexpire(Math.ceil(a.options.ttlMs));
    }
    return result;
  },
});

/**
 * Updates (or, with `inspect`, reads) each subject's rate profile, in one round trip (one script call
 * per request on its one key). Each request is atomic; they run in order (a key may appear twice).
 * The algorithm and the storage are described in `profile.ts`; memory and Redis compute the same
 * doubles. An empty batch does nothing.
 * @throws StoreError `THEMIS_ERR_STORE_ARGUMENT` when a request is invalid (checked first: nothing is
 * written), `THEMIS_ERR_STORE_WRONGTYPE` when a key holds something else than a hash.
 */
export async function profileUpdate(store: Store, requests: readonly ProfileRequest[]): Promise<ProfileResult[]> {
  // The store validates every request (PROFILE_UPDATE.validate) before anything is sent; `?.` lets a
  // request that is not an object reach that check.
  return store.atomic(
    PROFILE_UPDATE,
    requests.map((r) => ({ key: r?.key, args: r, now: r?.now })),
  );
}

/**
 * Remembers `members` in a bounded memory of the most recently seen (one string on one key: see
 * `seen.ts`) and tells which were new to it, atomically, in one round trip. With no members nothing
 * is read or written (size 0).
 * @throws StoreError `THEMIS_ERR_STORE_ARGUMENT` when a member or an option is invalid (nothing is
 * changed), `THEMIS_ERR_STORE_WRONGTYPE` when the key holds something else than a string.
 */
export async function seenAdd(store: Store, key: string, members: readonly string[], options: SeenAddOptions): Promise<SeenAddResult> {
  validateSeenAdd(members, options);
  if (members.length === 0) return { fresh: [], depth: [], size: 0 };
  const [result] = await store.atomic(SEEN_ADD, [{ key, args: { members, options } }]);
  return result;
}
