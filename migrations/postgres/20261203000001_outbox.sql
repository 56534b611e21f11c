-- The transactional outbox: every change appends its event here in the same transaction, and
-- the relay publishes it to Kafka. Doubles as each tenant's audit trail.
--
-- Tenants see only their own events (row-level security, as everywhere). The relay must read
-- every tenant's pending events; it does so only through the SECURITY DEFINER functions below,
-- which run as the owner of this table, and the owner alone has a policy that admits all rows.
-- The service's own role gains nothing but the right to call those functions.

CREATE TABLE outbox_events (
    seq            bigint      GENERATED ALWAYS AS IDENTITY,
    id             uuid        NOT NULL,
    tenant_id      uuid        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   uuid        NOT NULL,
    event_type     text        NOT NULL,
    -- json, not jsonb: the payload is only ever read back whole, and skipping jsonb's
    -- conversion was a fifth of the cost of logging a run.
    data           json        NOT NULL,
    occurred_at    timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at   timestamptz,
    claimed_by     text,
    claimed_until  timestamptz,
    attempts       integer     NOT NULL DEFAULT 0,
    last_error     text,
    CONSTRAINT outbox_events_pkey PRIMARY KEY (seq)
);
CREATE INDEX outbox_events_pending_idx
    ON outbox_events (aggregate_id, seq) WHERE published_at IS NULL;
CREATE INDEX outbox_events_pending_seq_idx ON outbox_events (seq) WHERE published_at IS NULL;
CREATE INDEX outbox_events_tenant_idx ON outbox_events (tenant_id, seq);

ALTER TABLE outbox_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE outbox_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON outbox_events
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
CREATE POLICY relay_owner ON outbox_events TO CURRENT_USER USING (true) WITH CHECK (true);

-- Claims the pending events of up to `max_aggregates` aggregates whose oldest pending event is
-- free (never claimed, lease expired, or already ours). Only the holder of an aggregate's
-- oldest pending event takes the rest of its chain, so one aggregate is published by one relay
-- at a time, in order. SKIP LOCKED lets relays claim side by side without waiting.
CREATE FUNCTION outbox_claim(relay text, max_aggregates integer, lease_seconds integer)
RETURNS SETOF outbox_events
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    WITH heads AS (
        SELECT e.seq, e.aggregate_id
        FROM outbox_events e
        WHERE e.published_at IS NULL
          AND (e.claimed_until IS NULL OR e.claimed_until < now() OR e.claimed_by = relay)
          AND NOT EXISTS (
              SELECT 1 FROM outbox_events p
              WHERE p.aggregate_id = e.aggregate_id AND p.published_at IS NULL AND p.seq < e.seq)
        ORDER BY e.seq
        LIMIT max_aggregates
        FOR UPDATE SKIP LOCKED
    )
    UPDATE outbox_events o
    SET claimed_by = relay, claimed_until = now() + make_interval(secs => lease_seconds)
    FROM heads h
    WHERE o.aggregate_id = h.aggregate_id AND o.published_at IS NULL
    RETURNING o.*
$$;

CREATE FUNCTION outbox_mark_published(sequences bigint[])
RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    UPDATE outbox_events
    SET published_at = clock_timestamp(), claimed_by = NULL, claimed_until = NULL
    WHERE seq = ANY(sequences) AND published_at IS NULL
$$;

CREATE FUNCTION outbox_release(relay text, sequences bigint[], error text)
RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    UPDATE outbox_events
    SET claimed_by = NULL, claimed_until = NULL, attempts = attempts + 1, last_error = error
    WHERE seq = ANY(sequences) AND claimed_by = relay AND published_at IS NULL
$$;

CREATE FUNCTION outbox_backlog(OUT pending bigint, OUT oldest timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    SELECT count(*), min(occurred_at) FROM outbox_events WHERE published_at IS NULL
$$;

CREATE FUNCTION outbox_purge_published(before timestamptz)
RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    WITH gone AS (
        DELETE FROM outbox_events WHERE published_at IS NOT NULL AND published_at < before
        RETURNING 1)
    SELECT count(*) FROM gone
$$;

REVOKE ALL ON FUNCTION outbox_claim(text, integer, integer), outbox_mark_published(bigint[]),
    outbox_release(text, bigint[], text), outbox_backlog(), outbox_purge_published(timestamptz)
    FROM PUBLIC;
