"""The catalog: database engine and ORM models, typed queries, job leases, the artifact store, migrations, and
the teacher and dataset uploads it records.
"""
