-- Runs once when the leader's data volume is created (docker-entrypoint-initdb.d).
CREATE DATABASE catalog_read;
