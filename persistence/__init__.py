"""Durable storage for chatd: schema, migrations, stores and the group-commit writer.

`database` makes the engine (SQLite or PostgreSQL) and draws the storage-down boundary;
`schema` holds the tables and `migrate` brings a database to them; each store module
(`users`, `sessions`, `sightings`, `conversations`, `blocks`, `messages`; for moderation
`reports`, `audit`, `alerts` and `signals`) holds the SQL behind a few verbs and returns
the frozen records of `records`; `writer` appends messages
in batches, one transaction and one disk flush per batch, linking each to the conversation's
hash chain (`chain`). Nothing here imports the rest of chatd.
"""
