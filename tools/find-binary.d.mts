/** Full path of a command on PATH or in the sbin directories Debian puts daemons in; undefined when absent. */
export declare function findBinary(name: string): string | undefined;
