//! The gallery's schema in PostgreSQL and its versioned migrations. The server applies the
//! migrations it knows at start-up, each once, in one transaction under an advisory lock (so
//! servers starting together on one database do not race), and records them in
//! `imagesearch_schema`.

/// A schema change: its version, what it does, and its SQL.
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, oldest first. Never edit one that has shipped: add the next.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "photos, their bytes by content hash, and what is known of each content",
    sql: r#"
CREATE EXTENSION IF NOT EXISTS vector;

-- Photo bytes, content-addressed: written when a stream stages them, kept while a photo
-- refers to them.
CREATE TABLE photo_contents (
    sha256     bytea PRIMARY KEY CHECK (octet_length(sha256) = 32),
    bytes      bytea NOT NULL,
    staged_at  timestamptz NOT NULL DEFAULT now()
);

-- What is known of some bytes whatever id they are stored under (the law's evidence and
-- reviews); outlives the photos that raised it.
CREATE TABLE content_flags (
    sha256      bytea PRIMARY KEY CHECK (octet_length(sha256) = 32),
    flag        smallint NOT NULL,
    reviewed_by text NOT NULL DEFAULT '',
    note        text NOT NULL DEFAULT '',
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE photos (
    id              text PRIMARY KEY,
    sha256          bytea NOT NULL REFERENCES photo_contents (sha256),
    mime            text NOT NULL,
    captions        text[] NOT NULL,
    flag            smallint NOT NULL,
    -- The image encoder whose output `vector` is (a vector is only valid for its encoder).
    encoder_sha256  text NOT NULL,
    vector          vector NOT NULL,
    added_at        timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX photos_by_sha256 ON photos (sha256);
"#,
}, Migration {
    version: 2,
    name: "the change feed replicas follow",
    sql: r#"
-- Every gallery write appends the keys it touched, numbered without gaps under the writers'
-- advisory lock; a server sharing the gallery re-reads those rows to catch up.
CREATE TABLE gallery_changes (
    seq       bigint PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    photo_id  text,
    sha256    bytea,
    CHECK ((photo_id IS NULL) <> (sha256 IS NULL))
);
"#,
}, Migration {
    version: 3,
    name: "the rollout every server sharing the gallery obeys",
    sql: r#"
CREATE TABLE rollout (
    id              smallint PRIMARY KEY CHECK (id = 1),
    stable          integer NOT NULL,
    canary          integer NOT NULL,
    canary_percent  integer NOT NULL,
    -- Compare-and-set: a save names the generation it replaces.
    generation      bigint NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
"#,
}, Migration {
    version: 4,
    name: "the search indexes of scorer versions",
    sql: r#"
-- One row per scorer version whose projected embeddings live in the database (table
-- `embeddings_v<version>`, made by the server that loads the version first); the image tower's
-- sha256 says which weights made them.
CREATE TABLE search_indexes (
    version       integer PRIMARY KEY,
    tower_sha256  text NOT NULL,
    dim           integer NOT NULL,
    table_name    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
"#,
}, Migration {
    version: 5,
    name: "photo attributes and keyword search over captions",
    sql: r#"
-- What the uploader gave with a photo (owner, album, camera, place …), filtered on by searches.
ALTER TABLE photos ADD COLUMN attributes jsonb NOT NULL DEFAULT '{}'::jsonb;
CREATE INDEX photos_attributes ON photos USING gin (attributes jsonb_path_ops);
CREATE INDEX photos_added_at ON photos (added_at);
-- The captions as text for full-text search: all of them (searched in open regions), and those
-- the server's lexicon finds no child in (searched in restricted regions). NULL until a server
-- has written it, which no restricted region ever matches (fail closed).
ALTER TABLE photos ADD COLUMN caption_text text NOT NULL DEFAULT '';
ALTER TABLE photos ADD COLUMN open_caption_text text;
UPDATE photos SET caption_text = array_to_string(captions, E'\n');
ALTER TABLE photos ADD COLUMN captions_tsv tsvector
    GENERATED ALWAYS AS (to_tsvector('english'::regconfig, caption_text)) STORED;
ALTER TABLE photos ADD COLUMN open_captions_tsv tsvector
    GENERATED ALWAYS AS (to_tsvector('english'::regconfig, coalesce(open_caption_text, ''))) STORED;
CREATE INDEX photos_captions_tsv ON photos USING gin (captions_tsv);
CREATE INDEX photos_open_captions_tsv ON photos USING gin (open_captions_tsv);
"#,
}];

/// Advisory lock class of a version's HNSW build (the second key is the version), held for
/// the session of the one server that builds.
pub const INDEX_LOCK: i32 = 0x696d_6769;

/// Advisory lock class of a version's search-index set-up (making its table), held for that
/// short transaction. Apart from [`INDEX_LOCK`]: a set-up waiting inside its transaction for
/// the build's lock would deadlock with `CREATE INDEX CONCURRENTLY`, which waits for every
/// older transaction to end.
pub const INDEX_SETUP_LOCK: i32 = 0x696d_6775;

/// Advisory lock key of schema migrations ("imgs" in ASCII).
pub const MIGRATION_LOCK: i64 = 0x696d_6773;

/// Advisory lock key every gallery write takes for its transaction ("imgw"): writes from all
/// servers sharing the gallery are serialised, so the change feed has no gaps.
pub const WRITER_LOCK: i64 = 0x696d_6777;

/// Applies the migrations not yet recorded; returns the versions applied now.
pub fn migrate(client: &mut postgres::Client) -> Result<Vec<i32>, postgres::Error> {
    // Everything under the lock, the bookkeeping table too: servers starting together would
    // otherwise race on creating it.
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS imagesearch_schema (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )?;
    let done: Vec<i32> = tx.query("SELECT version FROM imagesearch_schema", &[])?.iter().map(|r| r.get(0)).collect();
    let mut applied = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| !done.contains(&m.version)) {
        tx.batch_execute(m.sql)?;
        tx.execute("INSERT INTO imagesearch_schema (version, name) VALUES ($1, $2)", &[&m.version, &m.name])?;
        applied.push(m.version);
    }
    tx.commit()?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1, "{}", m.name);
            assert!(!m.sql.trim().is_empty());
        }
    }
}
