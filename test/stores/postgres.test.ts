// The store suite on a real PostgreSQL server, a database per test group: see store-suite.ts.
import { startPostgresServer } from "../support/postgres.js";
import { describeStores } from "./store-suite.js";

describeStores("postgres", async () => {
  const server = await startPostgresServer();
  return { location: (name) => server.createDatabase(name.replace(/-/g, "_")), teardown: () => server.stop() };
});
