"""Hand-written normalised events for tests of the core (not provider payloads)."""

from __future__ import annotations

from datetime import UTC, datetime

from integrations.events import AgentReply, MessageKind, SocialMessage, SocialUser


def message(
    message_id: str = "1850000000000000001", *, author_id: str = "42", account: str = "1000",
    kind: MessageKind = MessageKind.MENTION, text: str = "@acme my order never arrived",
    in_reply_to_id: str | None = None, is_own: bool = False,
) -> SocialMessage:
    return SocialMessage(
        channel="x", account=account, message_id=message_id, kind=kind,
        author=SocialUser("x", author_id, f"user{author_id}", f"User {author_id}", 10,
                          f"https://x.com/user{author_id}"),
        text=text, created_at=datetime(2026, 11, 22, 8, 30, tzinfo=UTC),
        in_reply_to_id=in_reply_to_id, conversation_id=in_reply_to_id or message_id,
        expanded_urls=("https://example.com/a",), permalink=f"https://x.com/i/status/{message_id}",
        language="nl", is_own=is_own, raw={"id_str": message_id},
    )


def agent_reply(comment_id: str = "9001", ticket_id: str = "1001") -> AgentReply:
    return AgentReply(helpdesk="hd", ticket_id=ticket_id, comment_id=comment_id,
                      text="We sturen een nieuwe.", public=True,
                      created_at=datetime(2026, 11, 22, 9, 0, tzinfo=UTC), author_name="Agent")
