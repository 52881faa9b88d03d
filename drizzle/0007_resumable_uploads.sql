CREATE TABLE "resumable_uploads" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"owner_id" uuid,
	"state" text DEFAULT 'receiving' NOT NULL,
	"length" bigint NOT NULL,
	"upload_offset" bigint DEFAULT 0 NOT NULL,
	"metadata" text DEFAULT '' NOT NULL,
	"filename" varchar(255) NOT NULL,
	"content_type" varchar(127) NOT NULL,
	"is_public" boolean DEFAULT false NOT NULL,
	"storage_key" text NOT NULL,
	"storage_state" jsonb,
	"inspection" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"file_id" uuid,
	"lock_token" uuid,
	"locked_until" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"expires_at" timestamp with time zone NOT NULL,
	CONSTRAINT "resumable_uploads_storage_key_unique" UNIQUE("storage_key"),
	CONSTRAINT "resumable_uploads_state_check" CHECK ("resumable_uploads"."state" in ('receiving', 'completing', 'complete')),
	CONSTRAINT "resumable_uploads_offset_check" CHECK ("resumable_uploads"."upload_offset" between 0 and "resumable_uploads"."length")
);
--> statement-breakpoint
ALTER TABLE "resumable_uploads" ADD CONSTRAINT "resumable_uploads_owner_id_users_id_fk" FOREIGN KEY ("owner_id") REFERENCES "public"."users"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "resumable_uploads" ADD CONSTRAINT "resumable_uploads_file_id_files_id_fk" FOREIGN KEY ("file_id") REFERENCES "public"."files"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "resumable_uploads_owner_idx" ON "resumable_uploads" USING btree ("owner_id");--> statement-breakpoint
CREATE INDEX "resumable_uploads_expires_idx" ON "resumable_uploads" USING btree ("expires_at");