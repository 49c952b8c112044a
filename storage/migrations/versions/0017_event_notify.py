"""events: NOTIFY at commit, so other processes hear of new events at once

Revision ID: 0017
Revises: 0016

SSE streams and event delivery saw events appended by another process (every camera
event: workers append, the API node serves) only by polling, once a second: the city
simulator's webhook lag was 2.1–2.3 s at p95 against a 2 s target (issue #18). The trigger
that gives an event its ``seq`` at commit now also sends ``NOTIFY xueliang_events``;
PostgreSQL delivers it when the transaction commits, once per transaction however many
events it appended (identical notifications are folded), and every process LISTENs
(:mod:`storage.event_notify`). Polling stays as the fallback.
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

#: storage.events.EVENT_APPEND_LOCK; storage.event_notify.CHANNEL
LOCK = 0x58554C02
CHANNEL = "xueliang_events"


def _function(notify: str) -> str:
    return f"""
        CREATE OR REPLACE FUNCTION events_assign_seq() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_advisory_xact_lock({LOCK});
            UPDATE events SET seq = nextval('events_seq_seq') WHERE seq = NEW.seq;
            {notify}
            RETURN NULL;
        END
        $$
        """


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_function(f"PERFORM pg_notify('{CHANNEL}', '');"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_function(""))
