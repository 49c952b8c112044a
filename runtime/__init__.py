"""The process runtime and its composition root (``runtime.process.build_process``).

The adapters every part shares (``Services``: database, object store, secrets, event hub,
metrics registry), the camera runtime (leases, one supervisor and one analysis loop per
camera), the archiver that uploads spooled clips, retention, and the Prometheus collectors.
``build_process`` builds all of them for a role and hands each part what it needs.
May import: ``config``, ``analytics``, ``storage``, ``ingest``, ``live``, ``delivery``.
"""
