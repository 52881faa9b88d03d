ALTER TABLE "revoked_tokens" ADD COLUMN "revoked_at" timestamp with time zone DEFAULT now() NOT NULL;--> statement-breakpoint
CREATE INDEX "auth_sessions_revoked_at_idx" ON "auth_sessions" USING btree ("revoked_at");--> statement-breakpoint
CREATE INDEX "revoked_tokens_revoked_at_idx" ON "revoked_tokens" USING btree ("revoked_at");--> statement-breakpoint
CREATE INDEX "users_updated_at_idx" ON "users" USING btree ("updated_at");