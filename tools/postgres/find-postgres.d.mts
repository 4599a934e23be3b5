/** Where Debian's postgresql-<major> packages put their programs: <root>/<major>/bin. */
export declare const debianPostgresRoot: string;
/**
 * The directory holding `initdb` and `postgres`: the newest major version under
 * Debian's /usr/lib/postgresql/<major>/bin, else the directory of `initdb` on PATH
 * when `postgres` sits beside it. Undefined when the server is not installed.
 */
export declare function findPostgresBinDir(root?: string): string | undefined;
