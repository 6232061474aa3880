BEGIN TRANSACTION;
CREATE TABLE "consumer_chains" (
   "provider" TEXT PRIMARY KEY,
   "epoch" INTEGER,
   "base_sent" INTEGER,
   "base_received" INTEGER,
   "seq" INTEGER,
   "signed_for" INTEGER,
   "signed_to" INTEGER,
   "own_sent" INTEGER,
   "own_received" INTEGER
);
INSERT INTO "consumer_chains" VALUES('QsshVEIgwwahKW87OxP7g0-Z6KnLxlHHbNWWXc_bHaQ',1767312040,300000,300000,3,300000,300000,600000,600000);
CREATE TABLE "disputes" (
   "id" INTEGER PRIMARY KEY,
   "at" REAL,
   "role" TEXT,
   "neighbour" TEXT,
   "epoch" INTEGER,
   "seq" INTEGER,
   "reason" TEXT,
   "claimed_for" INTEGER,
   "claimed_to" INTEGER,
   "signed_for" INTEGER,
   "signed_to" INTEGER
);
INSERT INTO "disputes" VALUES(1,1767312020.0,'consumer','QsshVEIgwwahKW87OxP7g0-Z6KnLxlHHbNWWXc_bHaQ',1767312010,2,'over_tolerance',200000,200000,180000,200000);
INSERT INTO "disputes" VALUES(2,1767398450.0,'consumer','QsshVEIgwwahKW87OxP7g0-Z6KnLxlHHbNWWXc_bHaQ',1767312040,2,'over_tolerance',200000,200000,180000,200000);
CREATE TABLE "exit_usage" (
   "month" TEXT,
   "node_id" TEXT,
   "bytes" INTEGER,
   PRIMARY KEY ("month", "node_id")
);
CREATE TABLE "link_counters" (
   "node_id" TEXT PRIMARY KEY,
   "kernel_table" INTEGER,
   "relayed_for_bytes" INTEGER,
   "relayed_for_reading" INTEGER,
   "relayed_to_bytes" INTEGER,
   "relayed_to_reading" INTEGER,
   "sent_bytes" INTEGER,
   "sent_reading" INTEGER,
   "received_bytes" INTEGER,
   "received_reading" INTEGER
);
CREATE TABLE "provider_chains" (
   "consumer" TEXT PRIMARY KEY,
   "epoch" INTEGER,
   "claimed_seq" INTEGER,
   "receipt_seq" INTEGER,
   "signed_for" INTEGER,
   "signed_to" INTEGER,
   "answered_for" INTEGER,
   "answered_to" INTEGER
);
CREATE TABLE "receipts" (
   "id" INTEGER PRIMARY KEY,
   "provider" TEXT,
   "consumer" TEXT,
   "epoch" INTEGER,
   "seq" INTEGER,
   "mesh_id" TEXT,
   "relayed_for_bytes" INTEGER,
   "relayed_to_bytes" INTEGER,
   "not_before" INTEGER,
   "not_after" INTEGER,
   "signature" TEXT,
   "dispute" TEXT,
   "stored_at" REAL,
   "acked" INTEGER
);
INSERT INTO "receipts" VALUES(1,'QsshVEIgwwahKW87OxP7g0-Z6KnLxlHHbNWWXc_bHaQ','k206SvzbRgzobleG1avsRUAH479lTC9P3uFw4m87W7o',1767312010,1,'235fd5e440b11c2c012bdc3ee7cf552e',100000,100000,1767311980,1767312040,'bee78398036e7e5d7518e12aa6cf8b7bd1f4f9c53e2083326c8dad0f75a7cda49f511780dd00da03163947e29f396bd3ceac9a3c8604c4cf3ff11e5b6607a700','',1.79648824824687361719e+09,0);
INSERT INTO "receipts" VALUES(2,'QsshVEIgwwahKW87OxP7g0-Z6KnLxlHHbNWWXc_bHaQ','k206SvzbRgzobleG1avsRUAH479lTC9P3uFw4m87W7o',1767312010,2,'235fd5e440b11c2c012bdc3ee7cf552e',180000,200000,1767311990,1767312050,'c704166a0d1905c2c339458313b9ff9b688ef7e6b6173414586e1ef1fc8402b2906a30f168a9dc0f7f707ce27bf9f5fd95a160c4342d3fbaa8c406fb65523609','over_tolerance',1.79648824825108146662e+09,0);
INSERT INTO "receipts" VALUES(3,'QsshVEIgwwahKW87OxP7g0-Z6KnLxlHHbNWWXc_bHaQ','k206SvzbRgzobleG1avsRUAH479lTC9P3uFw4m87W7o',1767312010,3,'235fd5e440b11c2c012bdc3ee7cf552e',300000,300000,1767312000,1767312060,'312e11f1b1ad2ad6b3eca300a64a2ab624f05faa72a3563ab6bf788591ade51eb0e02017df013db1d7d1e3ee82a041f580d7659a8411035f65f50757e2a0be0b','',1.79648824825494122505e+09,0);
INSERT INTO "receipts" VALUES(4,'QsshVEIgwwahKW87OxP7g0-Z6KnLxlHHbNWWXc_bHaQ','k206SvzbRgzobleG1avsRUAH479lTC9P3uFw4m87W7o',1767312040,1,'235fd5e440b11c2c012bdc3ee7cf552e',100000,100000,1767398410,1767398470,'7aa362cbb220f3918e105895858960edf7ddef8b3c30b64afd33ea5fa6f75d6dbabc2ffd7b85a1b56a40c0c8f94b0766a494aafa243ccb0e1d2f4b285d9e2302','',1.79648824826446795463e+09,0);
INSERT INTO "receipts" VALUES(5,'QsshVEIgwwahKW87OxP7g0-Z6KnLxlHHbNWWXc_bHaQ','k206SvzbRgzobleG1avsRUAH479lTC9P3uFw4m87W7o',1767312040,2,'235fd5e440b11c2c012bdc3ee7cf552e',180000,200000,1767398420,1767398480,'a000afe2475d19fc3a00be058cae348eba4faf1cea17d4f2c571b8e3d4d056a6be4e4fc46f4fc46ddf9e2f352bec098bd5e852b775921624a29cee88d0e1d105','over_tolerance',1.79648824826716136931e+09,0);
INSERT INTO "receipts" VALUES(6,'QsshVEIgwwahKW87OxP7g0-Z6KnLxlHHbNWWXc_bHaQ','k206SvzbRgzobleG1avsRUAH479lTC9P3uFw4m87W7o',1767312040,3,'235fd5e440b11c2c012bdc3ee7cf552e',300000,300000,1767398430,1767398490,'6d2f1dff8728140c7b4b438803a86741d3a77daf6d6494fc28bd12e391144b42f47b7c200625659f5951247b84cd1f6f6ac29da40e14f3809d3f4719b1d1af05','',1.79648824827016019818e+09,0);
CREATE TABLE "signers" (
   "node_id" TEXT PRIMARY KEY,
   "certificate" BLOB,
   "delegation" BLOB
);
CREATE UNIQUE INDEX "idx_receipts_provider_consumer_epoch_seq"
    ON "receipts" ("provider", "consumer", "epoch", "seq");
COMMIT;
