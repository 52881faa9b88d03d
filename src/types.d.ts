// Files imported `with { type: "file" }` resolve to a path (inside the binary: /$bunfs/...).
declare module "*.wasm" {
  const path: string;
  export default path;
}
declare module "*.data" {
  const path: string;
  export default path;
}
declare module "swagger-ui-dist/*" {
  const path: string;
  export default path;
}
declare module "redoc/bundles/*" {
  const path: string;
  export default path;
}
// Migrations are imported `with { type: "text" }`: their SQL, compiled into the program.
declare module "*.sql" {
  const text: string;
  export default text;
}
/** Defined by `scripts/build.ts` (`--define`): the commit the binary was built from. */
declare const BUILD_COMMIT: string | undefined;
