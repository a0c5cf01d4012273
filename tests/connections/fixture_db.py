"""The fixture database the connection tests walk: a wallet's own operations database.

Described by ``tests/connections/datasets/wallet_ops.yml``. Three customers and an employee:

- **A** (Alice, id 1): the data subject of most tests; two addresses, two orders with invoices, a card,
  twelve logins, two tickets (one found only by the e-mail written on it), a newsletter subscription,
  a note with an odd table/column name.
- **B** (Bob, id 2): was *referred by A* (``customers.referred_by`` = 1, a reference cycle), has one of
  everything; none of his rows may ever be returned or changed by A's request.
- **C** (id 3): an e-mail address full of SQL metacharacters.
- **E** (employee 1): handles A's and B's tickets; an employee is reached only by their own e-mail.

Tables are created with SQLAlchemy Core so the same code builds them on SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Column,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

ODD_TABLE = 'Ticket Notes "v2"; --'
ODD_NOTE = 'note "text"'
A_EMAIL = "alice@example.com"
A_PHONE = "+353851111111"
B_EMAIL = "bob@example.com"
C_EMAIL = "o'hara\"; DROP TABLE customers; --@example.com"
E_EMAIL = "eve@wallet.example"

metadata = MetaData()

customers = Table(
    "customers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("email", String(120)),
    Column("phone", String(32)),
    Column("name", String(40)),
    Column("date_of_birth", String(10)),
    Column("referred_by", Integer),  # no foreign key: a cycle the traversal must not follow into B
    Column("created_at", String(32)),
)
addresses = Table(
    "addresses",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("customer_id", Integer, ForeignKey("customers.id")),
    Column("street", String(120)),
    Column("city", String(60)),
    Column("postal_code", String(16)),
)
orders = Table(
    "orders",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("customer_id", Integer, ForeignKey("customers.id")),
    Column("shipping_address_id", Integer, ForeignKey("addresses.id")),
    Column("total_cents", Integer),
    Column("placed_at", String(32)),
)
invoices = Table(
    "invoices",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("order_id", Integer, ForeignKey("orders.id")),
    Column("amount_cents", Integer),
    Column("billing_name", String(40)),
)
payment_cards = Table(
    "payment_cards",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("customer_id", Integer, ForeignKey("customers.id")),
    Column("billing_address_id", Integer, ForeignKey("addresses.id")),
    Column("ccn", String(19)),
    Column("holder_name", String(40)),
    Column("card_brand", String(16)),
)
logins = Table(
    "logins",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("customer_id", Integer, ForeignKey("customers.id")),
    Column("ip_address", String(45)),
    Column("user_agent", String(200)),
    Column("logged_in_at", String(32)),
)
employees = Table(
    "employees",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("email", String(120)),
    Column("name", String(40)),
)
service_tickets = Table(
    "service_tickets",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("customer_id", Integer, ForeignKey("customers.id")),
    Column("employee_id", Integer, ForeignKey("employees.id")),
    Column("contact_email", String(120)),
    Column("subject", Text),
)
newsletter_subscribers = Table(
    "newsletter_subscribers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("email", String(120)),
    Column("topics", String(200)),
    Column("subscribed_at", String(32)),
)
ticket_notes = Table(
    ODD_TABLE,
    metadata,
    Column("ID", Integer, primary_key=True, autoincrement=False, quote=True),
    Column("ticket-id", Integer, ForeignKey("service_tickets.id"), quote=True),
    Column(ODD_NOTE, Text, quote=True),
    Column("order", Integer, quote=True),
    quote=True,
)


def _logins(customer: int, first: int, count: int) -> list[dict[str, Any]]:
    return [
        {
            "id": first + n,
            "customer_id": customer,
            "ip_address": f"198.51.100.{customer * 20 + n}",
            "user_agent": f"Wallet/{n} (customer {customer})",
            "logged_in_at": f"2026-03-{n + 1:02d}T08:00:00Z",
        }
        for n in range(count)
    ]


ROWS: dict[str, list[dict[str, Any]]] = {
    "customers": [
        {
            "id": 1,
            "email": A_EMAIL,
            "phone": A_PHONE,
            "name": "Alice Archer",
            "date_of_birth": "1990-01-01",
            "referred_by": None,
            "created_at": "2025-01-01T00:00:00Z",
        },
        {
            "id": 2,
            "email": B_EMAIL,
            "phone": "+353852222222",
            "name": "Bob Baker",
            "date_of_birth": "1985-05-05",
            "referred_by": 1,
            "created_at": "2025-02-01T00:00:00Z",
        },
        {
            "id": 3,
            "email": C_EMAIL,
            "phone": "+353853333333",
            "name": "Cian O'Hara",
            "date_of_birth": "1970-07-07",
            "referred_by": None,
            "created_at": "2025-03-01T00:00:00Z",
        },
    ],
    "addresses": [
        {"id": 10, "customer_id": 1, "street": "1 Alice Street", "city": "Dublin", "postal_code": "D01 A1A1"},
        {"id": 11, "customer_id": 1, "street": "2 Alice Lane", "city": "Cork", "postal_code": "T12 A1A1"},
        {"id": 20, "customer_id": 2, "street": "9 Bob Road", "city": "Galway", "postal_code": "H91 B2B2"},
        {"id": 30, "customer_id": 3, "street": "3 Cian Quay", "city": "Sligo", "postal_code": "F91 C3C3"},
    ],
    "orders": [
        {"id": 100, "customer_id": 1, "shipping_address_id": 10, "total_cents": 1999, "placed_at": "2026-01-02"},
        {"id": 101, "customer_id": 1, "shipping_address_id": 11, "total_cents": 4500, "placed_at": "2026-01-03"},
        {"id": 200, "customer_id": 2, "shipping_address_id": 20, "total_cents": 700, "placed_at": "2026-01-04"},
        {"id": 300, "customer_id": 3, "shipping_address_id": 30, "total_cents": 100, "placed_at": "2026-01-05"},
    ],
    "invoices": [
        {"id": 1000, "order_id": 100, "amount_cents": 1999, "billing_name": "Alice Archer"},
        {"id": 1001, "order_id": 101, "amount_cents": 4500, "billing_name": "Alice Archer"},
        {"id": 2000, "order_id": 200, "amount_cents": 700, "billing_name": "Bob Baker"},
    ],
    "payment_cards": [
        {
            "id": 500,
            "customer_id": 1,
            "billing_address_id": 10,
            "ccn": "4111111111111111",
            "holder_name": "ALICE ARCHER",
            "card_brand": "visa",
        },
        {
            "id": 600,
            "customer_id": 2,
            "billing_address_id": 20,
            "ccn": "5555555555554444",
            "holder_name": "BOB BAKER",
            "card_brand": "mastercard",
        },
    ],
    "logins": _logins(1, 1, 12) + _logins(2, 101, 3),
    "employees": [{"id": 1, "email": E_EMAIL, "name": "Eve Employee"}],
    "service_tickets": [
        {"id": 700, "customer_id": 1, "employee_id": 1, "contact_email": A_EMAIL, "subject": "Card blocked"},
        {"id": 701, "customer_id": None, "employee_id": 1, "contact_email": A_EMAIL, "subject": "Before sign-up"},
        {"id": 800, "customer_id": 2, "employee_id": 1, "contact_email": B_EMAIL, "subject": "Lost phone"},
    ],
    "newsletter_subscribers": [
        {"id": 1, "email": A_EMAIL, "topics": "offers,news", "subscribed_at": "2025-06-01"},
        {"id": 2, "email": B_EMAIL, "topics": "news", "subscribed_at": "2025-06-02"},
        {"id": 3, "email": "alice@example.com.evil.example", "topics": "news", "subscribed_at": "2025-06-03"},
    ],
    ODD_TABLE: [
        {"ID": 1, "ticket-id": 700, ODD_NOTE: "Called back; card reissued", "order": 1},
        {"ID": 2, "ticket-id": 800, ODD_NOTE: "Bob's phone lost", "order": 1},
    ],
}

# The primary keys of A's rows in each collection (what an access request for A must find).
A_KEYS: dict[str, set[int]] = {
    "customers": {1},
    "addresses": {10, 11},
    "orders": {100, 101},
    "invoices": {1000, 1001},
    "payment_cards": {500},
    "logins": set(range(1, 13)),
    "employees": set(),
    "service_tickets": {700, 701},
    "newsletter_subscribers": {1},
    ODD_TABLE: {1},
}
TABLES: dict[str, Table] = {table.name: table for table in metadata.sorted_tables}


def primary_key_name(table: Table) -> str:
    return next(iter(table.primary_key.columns)).name


async def reset(engine: AsyncEngine) -> None:
    """Drop and recreate every fixture table and insert the rows (each test starts from the same state)."""
    async with engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
        await conn.run_sync(metadata.create_all)
        for table in metadata.sorted_tables:
            rows = ROWS[table.name]
            if rows:
                await conn.execute(table.insert(), rows)


async def snapshot(conn: AsyncConnection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every fixture table, in primary-key order (to compare before and after)."""
    state: dict[str, list[tuple[Any, ...]]] = {}
    for table in metadata.sorted_tables:
        key = table.c[primary_key_name(table)]
        result = await conn.execute(select(table).order_by(key))
        state[table.name] = [tuple(row) for row in result]
    return state
