import { Elysia } from "elysia";
import type { Role } from "../db/schema";
import { errors } from "./errors";

export type Permission = "users:read" | "users:write" | "files:read" | "files:write" | "files:delete" | "audit:read";

/** `user` acts on its own profile and files only (checked in the services); `admin` holds every permission. */
const ROLE_PERMISSIONS: Record<Role, ReadonlySet<Permission>> = {
  user: new Set(),
  admin: new Set(["users:read", "users:write", "files:read", "files:write", "files:delete", "audit:read"]),
};

export const hasPermission = (role: Role, permission: Permission) => ROLE_PERMISSIONS[role].has(permission);

export interface AuthRequirement {
  role?: Role;
  permission?: Permission;
  /** Anonymous callers pass (with no principal); a token that is sent must still be valid. */
  optional?: boolean;
  /** With REQUIRE_VERIFIED_EMAIL=true, an unverified address gets 403 EMAIL_NOT_VERIFIED. */
  verifiedEmail?: boolean;
}

export const requireAuth: AuthRequirement = {};
export const optionalAuth: AuthRequirement = { optional: true };
export const requireRole = (role: Role): AuthRequirement => ({ role });
export const requirePermission = (permission: Permission): AuthRequirement => ({ permission });
/** Signed in, and (when REQUIRE_VERIFIED_EMAIL is on) with a verified email address: uploads. */
export const requireVerifiedEmail: AuthRequirement = { verifiedEmail: true };

/** Security requirement for the OpenAPI document: a bearer token, or the docs' OAuth2 password flow. */
export const BEARER_SECURITY: Record<string, string[]>[] = [{ bearerAuth: [] }, { OAuth2PasswordBearer: [] }];

/** The `detail` of a route that needs a bearer token. */
export const secured = (operationId: string, summary: string, description?: string) => ({
  operationId,
  summary,
  description,
  security: BEARER_SECURITY,
});

/** What a guard needs of whoever the token names; the auth module supplies the rest. */
export interface Authenticated {
  user: { id: string; role: Role; email_verified?: boolean };
}

/**
 * The `auth` route option: `{ auth: requireRole("admin") }` authenticates the bearer token, loads the
 * current user (so deactivation and role changes apply on the very next request) and checks the
 * requirement, exposing `principal` to the handler. It runs in `transform`, before the body is
 * validated: an anonymous caller gets 401 and a non-admin 403, never a 422 that probes the schema.
 */
export function authGuard<P extends Authenticated>(
  authenticate: (authorization: string | undefined) => Promise<P>,
  options: { requireVerifiedEmail: boolean } = { requireVerifiedEmail: false },
) {
  const principals = new WeakMap<Request, P>();
  return new Elysia({ name: "auth-guard" }).macro({
    auth: (requirement: AuthRequirement) => ({
      // Read from the request itself: in the compiled binary Elysia's static analysis misses `headers` here.
      async transform({ request }) {
        const authorization = request.headers.get("authorization") ?? undefined;
        if (requirement.optional && authorization === undefined) return;
        const principal = await authenticate(authorization);
        const { role } = principal.user;
        if (requirement.role && role !== requirement.role) throw errors.forbidden();
        if (requirement.permission && !hasPermission(role, requirement.permission)) throw errors.forbidden();
        if (requirement.verifiedEmail && options.requireVerifiedEmail && principal.user.email_verified !== true) {
          throw errors.emailNotVerified();
        }
        principals.set(request, principal);
      },
      // Typed as always present: only an `optionalAuth` route can see it undefined, and it says so.
      resolve: ({ request }) => ({ principal: principals.get(request) as P }),
    }),
  });
}

/** The guard plugin, for a module that declares what it needs of the principal. */
export type AuthGuard<P extends Authenticated> = ReturnType<typeof authGuard<P>>;
