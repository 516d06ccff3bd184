"""Keep's own routes beside the OpenAI API: sessions, their documents, and receipts."""
