"""Conversation memory: conversations and their messages, per user, erasable in one call."""

from auren.neuros.memory.sqlite import (
    MIGRATIONS,
    ConversationStore,
    ConversationSummary,
    Message,
    SQLiteConversations,
    new_conversation_id,
)

__all__ = ["MIGRATIONS", "ConversationStore", "ConversationSummary", "Message",
           "SQLiteConversations", "new_conversation_id"]
