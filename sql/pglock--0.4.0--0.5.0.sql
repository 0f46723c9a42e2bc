-- pglock 0.4.0 -> 0.5.0: token-owned locks you can trust. No function is added or changed in
-- its signature; what changed is what renew, release and fence_ok do (only for a role that may
-- act for the role that took the lock; renew is false when pglock.token_max_hold cut it short;
-- a release in the transaction that fenced the lock returns at once), which their comments say.
\echo Use "ALTER EXTENSION pglock UPDATE TO '0.5.0'" to load this file. \quit

COMMENT ON FUNCTION pglock.fence_ok(text, bigint) IS 'True only while this session holds the name under exactly this token, or a token-owned lock that the current role may act for holds it under this token (then until the transaction ends, for pglock.token_fence_timeout at most after the lock''s end): put it in the statement that writes.';
COMMENT ON FUNCTION pglock.renew(text, bigint, interval) IS 'Extends the token-owned lock on a name by ttl from now (NULL: its own ttl), up to pglock.token_max_hold; false if the token no longer owns it, the current role may not act for the role that took it, or pglock.token_max_hold cut the extension short.';
COMMENT ON FUNCTION pglock.renew(bigint, bigint, interval) IS 'Extends the token-owned lock on a key by ttl from now (NULL: its own ttl), up to pglock.token_max_hold; false if the token no longer owns it, the current role may not act for the role that took it, or pglock.token_max_hold cut the extension short.';
COMMENT ON FUNCTION pglock.release(text, bigint) IS 'Releases the token-owned lock on a name, from any connection of a role that may act for the role that took it; returns once the lock is free (at the end of the transaction if it checked the token with fence_ok); false if the token no longer owns it.';
COMMENT ON FUNCTION pglock.release(bigint, bigint) IS 'Releases the token-owned lock on a key, from any connection of a role that may act for the role that took it; returns once the lock is free (at the end of the transaction if it checked the token with fence_ok); false if the token no longer owns it.';
COMMENT ON FUNCTION pglock.token_locks() IS 'The token-owned locks held in this database: key, name, token (to roles that may act for the role that took it), mode, role, application_name, client address (to those who may read that role''s statistics), since and expiry; backs pglock.locks.';
