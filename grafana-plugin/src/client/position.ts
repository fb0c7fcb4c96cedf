/**
 * The resume position of a subscription (docs/protocol.md, "Positions"): what the client sends
 * back as `since` after a reconnect or a refresh. Every `data` message carries one, and each is a
 * safe place to resume from, whatever the message (a backfill piece, a live or late or coalesced
 * one): the server sends every point up to a position and none after it. So the position is simply
 * the last one received. The one place that says so, used by the carriers (resume.ts) and by the
 * frame store that a refresh resumes.
 */
export function nextPosition(current: string | undefined, msg: { position?: string | null; late?: boolean }): string | undefined {
  return msg.position ? msg.position : current;
}
