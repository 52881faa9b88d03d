CREATE SEQUENCE "public"."auth_change_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1;--> statement-breakpoint
ALTER TABLE "auth_sessions" ADD COLUMN "previous_jti" uuid;--> statement-breakpoint
ALTER TABLE "auth_sessions" ADD COLUMN "access_jti" uuid;--> statement-breakpoint
ALTER TABLE "auth_sessions" ADD COLUMN "rotated_at" timestamp with time zone;