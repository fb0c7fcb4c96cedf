/**
 * The resume position of a subscription (docs/protocol.md, "Positions"): what the client sends
 * back as `since` after a reconnect or a refresh. The one place that decides which data message
 * moves it, used by the carriers (resume.ts) and by the frame store that a refresh resumes.
 */
export function nextPosition(current: string | undefined, msg: { position?: string | null; late?: boolean }): string | undefined {
  return msg.position ? msg.position : current;
}
