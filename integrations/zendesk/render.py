"""What an agent sees on the ticket: the social message rendered as safe HTML.

Who wrote it (name, @handle, profile link, followers), the text, a link to the post, links to
its media and why deskbridge linked it there; an unverified message carries a clear warning.
Everything the customer wrote is escaped: never trusted as HTML.
"""

from __future__ import annotations

import hashlib
from html import escape

from integrations.events import Deletion, SocialMessage

WARNING = ("⚠️ UNVERIFIED: the sender is not known to be this ticket's requester. "
           "Do not share ticket details with them until you confirm who they are "
           "(tag deskbridge_verified to confirm).")


def write_marker(idempotency_key: str) -> str:
    """A short tag on each comment we write, so a retry can tell it was already written."""
    return "deskbridge-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:12]


def render_comment(message: SocialMessage, reason: str, verified: bool, marker: str = "") -> str:
    """The comment's HTML for `message`."""
    author = message.author
    who = escape(author.display_name or author.handle)
    profile = author.profile_url or f"https://x.com/{author.handle}"
    followers = (f" · {author.follower_count:,} followers"
                 if author.follower_count is not None else "")
    parts = []
    if not verified:
        parts.append(f"<p><strong>{escape(WARNING)}</strong></p>")
    where = "X (direct message)" if message.kind.value == "dm" else "X"
    if not author.is_known:  # X sent the post without its author: say so, link nobody
        parts.append(f"<p><strong>An unknown X user</strong> (X did not say who) on {where}:</p>")
    else:
        parts.append(f'<p><strong>{who}</strong> (<a href="{escape(profile, quote=True)}">'
                     f"@{escape(author.handle)}</a>{followers}) on {where}:</p>")
    parts.append("<blockquote>" + escape(message.text).replace("\n", "<br>") + "</blockquote>")
    links = [f'<a href="{escape(message.permalink, quote=True)}">view on X</a>']\
        if message.permalink else []
    links += [f'<a href="{escape(url, quote=True)}">media {n}</a>'
              for n, url in enumerate(message.media_urls, 1)]
    if links:
        parts.append("<p>" + " · ".join(links) + "</p>")
    if reason or marker:
        parts.append(f"<p><small>deskbridge: {escape(reason)} · {escape(marker)}</small></p>")
    return "\n".join(parts)


def render_deletion(deletion: Deletion, marker: str = "") -> str:
    """The internal note that a customer deleted a post that is on the ticket."""
    return (f"<p>The customer deleted their post {escape(deletion.message_id)} on X "
            f"({deletion.deleted_at:%Y-%m-%d %H:%M} UTC). X's policy asks that deleted "
            f"content is not used further. <small>{escape(marker)}</small></p>")
