"""Security of the fleet: credentials, permissions, audit records and signed orders.

tokens    bearer tokens (device, API, enrollment), shown once, stored as sha256
roles     management API roles and the permissions each grants
audit     audit records: who changed what, when, before and after
rollback  server-signed rollback orders that let a device install an older release
"""
