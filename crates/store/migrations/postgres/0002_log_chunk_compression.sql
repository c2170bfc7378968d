-- Log chunks are compressed in TOAST with lz4 rather than pglz, where the
-- server was built with lz4 (Debian's and the official images are): pglz
-- cost a 100 MB log more time than storing it. lz4 compresses a typical
-- log about as well, several times faster. Chunks already stored keep
-- their compression; both are read alike.
DO $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_settings
        WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)
    ) THEN
        ALTER TABLE log_chunks ALTER COLUMN data SET COMPRESSION lz4;
    END IF;
END
$$;
