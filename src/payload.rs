//! The report payload: upstream kopano-server's version-2 JSON, its field
//! names, and the canonical bytes (sorted keys, no whitespace) that are
//! audited and sent.

/// Every field a report can carry, by its name on the wire.
pub const FIELD_NAMES: &[&str] = &[
    "machine_id_hash",
    "server_guid_hash",
    "id_scheme",
    "program_name",
    "program_version",
    "osrelease",
    "utsname",
    "userplugin",
    "attachment_storage",
    "usercnt_active",
    "usercnt_contact",
    "usercnt_equipment",
    "usercnt_na_user",
    "usercnt_nonactive",
    "usercnt_room",
];
