-- Every committed change that the auth cache must see advances auth_change_seq inside the writing
-- transaction, so a change whose follow-up (the cache write) never happened - a crash, a database blip
-- between the two - still shows the cache as behind, and it is refilled.
CREATE FUNCTION "auth_change_advance"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM nextval('auth_change_seq');
  RETURN NULL;
END;
$$;--> statement-breakpoint
CREATE TRIGGER "users_auth_change" AFTER UPDATE ON "users" FOR EACH ROW
  WHEN ((OLD.username, OLD.email, OLD.name, OLD.bio, OLD.role, OLD.is_active)
    IS DISTINCT FROM (NEW.username, NEW.email, NEW.name, NEW.bio, NEW.role, NEW.is_active))
  EXECUTE FUNCTION "auth_change_advance"();--> statement-breakpoint
CREATE TRIGGER "users_auth_delete" AFTER DELETE ON "users" FOR EACH ROW EXECUTE FUNCTION "auth_change_advance"();--> statement-breakpoint
CREATE TRIGGER "auth_sessions_auth_change" AFTER UPDATE OF "revoked_at" ON "auth_sessions" FOR EACH ROW
  WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at)
  EXECUTE FUNCTION "auth_change_advance"();--> statement-breakpoint
CREATE TRIGGER "revoked_tokens_auth_change" AFTER INSERT ON "revoked_tokens" FOR EACH ROW EXECUTE FUNCTION "auth_change_advance"();
