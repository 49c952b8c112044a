"""events.seq assigned at commit (PostgreSQL): no lock held while a client works

Revision ID: 0016
Revises: 0015

Until now an appending transaction took the event log's advisory lock when it appended
and held it until its client sent COMMIT, so that ``seq`` values become visible in the
order they are assigned. At city scale (tests/scale: 40 workers, a district's power cut) a
client starved of CPU between its append and its COMMIT held every other appender up for
seconds. Now a row is inserted with a provisional negative ``seq`` and a deferred trigger
gives it its real one while the transaction commits, under the same lock: the lock is
held only inside the server's commit, and ``seq`` stays strictly increasing in commit
order, so a reader polling ``after=SEQ`` still never skips an event. SQLite has one writer
at a time and needs none of this.
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

#: storage.events.EVENT_APPEND_LOCK
LOCK = 0x58554C02


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE SEQUENCE events_pending_seq")
    op.execute("ALTER TABLE events ALTER COLUMN seq SET DEFAULT -nextval('events_pending_seq')")
    op.execute(
        f"""
        CREATE FUNCTION events_assign_seq() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_advisory_xact_lock({LOCK});
            UPDATE events SET seq = nextval('events_seq_seq') WHERE seq = NEW.seq;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE CONSTRAINT TRIGGER events_seq_at_commit AFTER INSERT ON events "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.seq < 0) "
        "EXECUTE FUNCTION events_assign_seq()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER events_seq_at_commit ON events")
    op.execute("DROP FUNCTION events_assign_seq()")
    op.execute("ALTER TABLE events ALTER COLUMN seq SET DEFAULT nextval('events_seq_seq')")
    op.execute("DROP SEQUENCE events_pending_seq")
