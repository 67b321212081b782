"""The admins' routes for the password login's accounts and for ending a user's logins (the operations page
reads them). Each does what ``moi user`` does on the server, through the same functions
(``moi.storage.accounts``, ``moi.storage.sessions``); only an admin may call them (403 otherwise).

GET    /api/v1/accounts                   every account: name, admin, created, live logins (never a hash)
POST   /api/v1/accounts                   {name, password, admin}: a new account
POST   /api/v1/accounts/{name}/password   {password}: a new password; the user's logins end
POST   /api/v1/accounts/{name}/admin      {admin}: give or take the flag; taking it ends their logins and
                                          revokes their admin tokens
DELETE /api/v1/accounts/{name}            remove it; the user's logins end and their tokens are revoked
POST   /api/v1/users/{name}/logout        end every login and revoke every token of any login name

A password comes in the JSON body only, and is never answered nor logged. From here the last admin
account can be neither removed nor demoted (409): the operator's ``moi user`` can.
"""

from __future__ import annotations

from typing import Any

from moi.core.errors import InvalidUserName
from moi.core.keys import user_name_problem
from moi.storage import accounts, sessions
from moi.storage.store import Store
from moi.web.api_handler import PREFIX, APIHandler, Problem
from moi.web.api_submission import submitted


class AccountsAdminHandler(APIHandler):
    """An admin's route: 403 for anyone else, before the body is read."""

    async def prepare(self) -> None:
        await super().prepare()
        if not self.admin:
            raise Problem(403, "forbidden", "accounts and logins are managed by admins")

    def body(self) -> dict[str, Any]:
        return submitted(self.request, self.json_limit())

    def text(self, given: dict[str, Any], field: str) -> str:
        value = given.get(field)
        if not isinstance(value, str):
            raise Problem(422, "invalid", f"'{field}' must be a string")
        return value

    def flag(self, given: dict[str, Any], field: str, default: bool | None = None) -> bool:
        value = given.get(field, default)
        if not isinstance(value, bool):
            raise Problem(422, "invalid", f"'{field}' must be true or false")
        return value


def valid_name(name: str) -> str:
    problem = user_name_problem(name)
    if problem is not None:
        raise InvalidUserName(name, problem)
    return name


class AccountsHandler(AccountsAdminHandler):
    async def get(self) -> None:
        """Every password account: name, admin, when made, live logins (admins; never a password nor its hash).
        ---
        responses:
          403: {description: not an admin}
        """
        self.answer({"accounts": await self.run(listing, self.store)})

    async def post(self) -> None:
        """A new password account (admins): {name, password, admin}.
        ---
        requestBody:
          content:
            application/json:
              schema: {type: object, properties: {name: {type: string}, password: {type: string},
                       admin: {type: boolean}}, required: [name, password]}
        responses:
          201: {description: "the account: {name, admin}"}
          403: {description: not an admin}
          409: {description: the name has an account already}
          422: {description: "a refused name or password (8 to 1024 characters)"}
        """
        given = self.body()
        name, password = self.text(given, "name"), self.text(given, "password")
        admin = self.flag(given, "admin", False)
        await self.run(accounts.add, self.store, name, password, admin=admin)
        self.answer({"name": name, "admin": admin}, 201)


def listing(store: Store) -> list[dict[str, Any]]:
    found = accounts.listed(store)
    live = sessions.live_counts(store, [account.name for account in found])
    return [
        {"name": account.name, "admin": account.admin, "created": account.created, "sessions": live[account.name]}
        for account in found
    ]


class PasswordHandler(AccountsAdminHandler):
    async def post(self, name: str) -> None:
        """A new password for an account (admins): {password}; the user's logins end, their tokens go on.
        ---
        requestBody:
          content:
            application/json:
              schema: {type: object, properties: {password: {type: string}}, required: [password]}
        responses:
          200: {description: "{name, sessions_ended}"}
          403: {description: not an admin}
          404: {description: no such account}
          422: {description: "a refused password (8 to 1024 characters)"}
        """
        password = self.text(self.body(), "password")
        ended = await self.run(accounts.set_password, self.store, name, password)
        self.answer({"name": name, "sessions_ended": ended})


class AdminFlagHandler(AccountsAdminHandler):
    async def post(self, name: str) -> None:
        """Give or take an account's admin flag (admins): {admin}. Taking it ends the user's logins and
        revokes their admin tokens; giving it counts from their next login.
        ---
        requestBody:
          content:
            application/json:
              schema: {type: object, properties: {admin: {type: boolean}}, required: [admin]}
        responses:
          200: {description: "{name, admin, sessions_ended, tokens_revoked}"}
          403: {description: not an admin}
          404: {description: no such account}
          409: {description: the last admin account cannot be demoted from the web}
          422: {description: admin is not true or false}
        """
        admin = self.flag(self.body(), "admin")
        ended, revoked = await self.run(accounts.set_admin, self.store, name, admin, keep_an_admin=True)
        self.answer({"name": name, "admin": admin, "sessions_ended": ended, "tokens_revoked": revoked})


class AccountHandler(AccountsAdminHandler):
    async def delete(self, name: str) -> None:
        """Remove an account (admins): the user's logins end and their tokens are revoked.
        ---
        responses:
          403: {description: not an admin}
          404: {description: no such account}
          409: {description: the last admin account cannot be removed from the web}
        """
        await self.run(accounts.remove, self.store, name, keep_an_admin=True)
        self.set_status(204)
        self.finish()


class LogoutUserHandler(AccountsAdminHandler):
    async def post(self, name: str) -> None:
        """End every login and revoke every token of a user (admins): any login name, with an account or not.
        ---
        responses:
          200: {description: "{name, sessions_ended, tokens_revoked}"}
          403: {description: not an admin}
          422: {description: not a login name}
        """
        await self.run(valid_name, name)
        ended, revoked = await self.run(sessions.end_everything, self.store, name)
        self.answer({"name": name, "sessions_ended": ended, "tokens_revoked": revoked})


ROUTES = [
    (rf"{PREFIX}/accounts", AccountsHandler),
    (rf"{PREFIX}/accounts/([^/]+)/password", PasswordHandler),
    (rf"{PREFIX}/accounts/([^/]+)/admin", AdminFlagHandler),
    (rf"{PREFIX}/accounts/([^/]+)", AccountHandler),
    (rf"{PREFIX}/users/([^/]+)/logout", LogoutUserHandler),
]
