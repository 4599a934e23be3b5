export type { Database, Dialect, Migration, Queryable, SessionLock, SqlValue, StagedWrites, Transaction, TransactionOptions } from "./types.js";
export { isPostgresUrl, openDatabase, type DatabaseOptions } from "./database.js";
export { isDatabaseRefusingWrites, isDatabaseTakingNoWrites, isDatabaseUnavailable, isLockTimeout, isWriteConflict, limitLockWaits } from "./postgres.js";
export { databaseOwners, migrate, migrationSql, type MigrateOptions, type MigrationLockRetry } from "./migrate.js";
export { claimSqliteFile, isNotSqliteFile } from "./sqlite.js";
export { isStorageFailure, isStorageFull } from "./storage-full.js";
export { startRetention, type Retention, type RetentionOptions } from "./retention.js";
export { placeholderRows, sqlByRowCount } from "./statements.js";
export { aheadMark, type AheadCheck, CaughtStatementError, caughtStatementFailure, isSentAheadFailure, sendAhead } from "./transaction-scope.js";
