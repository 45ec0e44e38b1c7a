"""The actor runtime: messages, mailboxes, the channel, actors, supervision, the system.

Imports nothing else of the project (a test checks it); `actord` re-exports its public API.
"""
