/**
 * SMTP replies as plugins let administrators configure them: a zod schema for the `reply` field of a
 * policy, and the resolution of a configured reply against the plugin's default, with `{name}`
 * placeholders filled in. Shared so that every plugin's replies are written and checked the same way.
 * @module
 */
import { z } from 'zod';

/** A configured reply: any part may be left out and comes from the plugin's default. */
export const replyConfigSchema = z.strictObject({
  /** The SMTP code: 4xx (try again later) or 5xx (refused for good). */
  code: z.number().int().refine((c) => (c >= 400 && c < 460) || (c >= 500 && c < 560), 'expected a 4xx or 5xx SMTP code').optional(),
  /** The enhanced status code (RFC 3463), of the same class as `code`. */
  enhanced: z.string().regex(/^[45]\.\d{1,3}\.\d{1,3}$/, 'expected an enhanced status code such as 4.7.1 or 5.7.23').optional(),
  /** The text, with `{name}` placeholders. */
  text: z.string().min(1).max(400).optional(),
});

/** A configured reply, validated. */
export type ReplyConfig = z.infer<typeof replyConfigSchema>;

/** A complete reply. */
export interface ResolvedReply {
  /** SMTP code. */
  code: number;
  /** Enhanced status code. */
  enhanced: string;
  /** Text, placeholders filled. */
  text: string;
}

/**
 * Fills `{name}` placeholders from `values` (unknown names stay as written) and turns line breaks
 * into spaces: the result goes into an SMTP reply or a header, where a line break would inject.
 */
export function fillTemplate(template: string, values: Readonly<Record<string, string | number>>): string {
  return template.replace(/\{(\w+)\}/g, (all, name: string) => (name in values ? String(values[name]) : all)).replace(/[\r\n]+/g, ' ');
}

/**
 * The reply to send: the configured parts over the plugin's default, placeholders filled. An enhanced
 * code left out follows the code's class (a configured 5xx with the default `4.7.1` becomes `5.7.1`),
 * since the MTA refuses a reply whose two codes disagree.
 */
export function resolveReply(config: ReplyConfig | undefined, fallback: ResolvedReply, values: Readonly<Record<string, string | number>> = {}): ResolvedReply {
  const code = config?.code ?? fallback.code;
  const enhanced = config?.enhanced ?? `${String(code)[0]}${fallback.enhanced.slice(1)}`;
  return { code, enhanced, text: fillTemplate(config?.text ?? fallback.text, values) };
}
