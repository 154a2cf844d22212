"""Conversation memory: conversations and their messages, per user, erasable in one call.

``base`` holds the ``ConversationStore`` Protocol, its records and the in-memory twin;
``sqlite`` is the embedded store (in the events' SQLite file) and ``postgres`` the full stack's,
shared by every NEUROS process. Which one a service gets is decided by the composition root
(``auren.services.dataplane``).
"""

from auren.neuros.memory.base import (
    ConversationStore,
    ConversationSummary,
    MemoryConversations,
    Message,
    new_conversation_id,
)

__all__ = ["ConversationStore", "ConversationSummary", "MemoryConversations", "Message",
           "new_conversation_id"]
