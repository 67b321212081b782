"""``moi server``: the web layer, the Tornado application with its HTTP API, metrics, file routes and pages.

It may import the layers below it (relay, upkeep, services, jobs, compute, jobfiles, queue, storage, core).
Its modules:

    ``server``          the Tornado application of ``moi server``: its routes and development login
    ``api``             the HTTP API's routes for a user's own work: jobs, a job's files and log, groups, services
    ``api_handler``     the API's shared base: who is asking, and how they are answered (errors as problems)
    ``api_submission``  a submission's body read as one dict: a JSON object, or a multipart form
    ``api_ops``         the API's operations routes: queues, contexts, engines, workers, throughput, health
    ``api_accounts``    the admins' routes: password accounts, and ending a user's logins and tokens
    ``openapi``         the API's OpenAPI 3 document, generated from its handlers, and a page for it
    ``metrics``         ``GET /metrics``: moi's figures in the Prometheus text format
    ``file_routes``     a job's files over HTTP: listed, and streamed one at a time, to its owner only
    ``dashboard``       the dashboard's pages: my jobs, a job, the submit form and, for admins, operations

``static/`` holds ``moi.js``, ``moi_list.js``, ``dashboard.js``, ``moi_accounts.js`` and the CSS;
``templates/`` the pages' shells.
"""
