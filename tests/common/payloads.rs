//! Report bodies the way both client generations write them.

/// A payload as surveyd sends it: canonical, hashed identifiers.
pub fn surveyd_payload(
    scheme: &str,
    machine_hash: &str,
    guid_hash: &str,
    version: &str,
    active: i64,
) -> String {
    let s = |v: &str| serde_json::json!({"desc": "", "type": "string", "value": v});
    let n = |v: i64| serde_json::json!({"desc": "", "mode": "gauge", "type": "int", "value": v});
    serde_json::json!({
        "version": 2,
        "stats": {
            "id_scheme": s(scheme),
            "machine_id_hash": s(machine_hash),
            "server_guid_hash": s(guid_hash),
            "program_name": s("kopano-server"),
            "program_version": s(version),
            "osrelease": s("Debian GNU/Linux 12 (bookworm)"),
            "utsname": s("Linux x86_64 6.1.0-18-amd64"),
            "userplugin": s("ldap"),
            "attachment_storage": s("files"),
            "usercnt_active": n(active),
            "usercnt_contact": n(3),
            "usercnt_equipment": n(1),
            "usercnt_na_user": n(0),
            "usercnt_nonactive": n(2),
            "usercnt_room": n(4),
        }
    })
    .to_string()
}

/// A payload as kopano-server's jsoncpp StreamWriter writes it: tab
/// indentation, ` : ` separators, raw machine id and server GUID.
pub fn upstream_payload(raw_machine_id: &str, raw_guid: &str, active: i64) -> String {
    let string = |name: &str, desc: &str, value: &str| {
        format!("\t\t\"{name}\" : \n\t\t{{\n\t\t\t\"desc\" : \"{desc}\",\n\t\t\t\"type\" : \"string\",\n\t\t\t\"value\" : \"{value}\"\n\t\t}}")
    };
    let int = |name: &str, desc: &str, value: i64| {
        format!("\t\t\"{name}\" : \n\t\t{{\n\t\t\t\"desc\" : \"{desc}\",\n\t\t\t\"mode\" : \"counter\",\n\t\t\t\"type\" : \"int\",\n\t\t\t\"value\" : {value}\n\t\t}}")
    };
    let entries = [
        string("machine_id", "", raw_machine_id),
        string(
            "osrelease",
            "Pretty operating system name",
            "Debian GNU/Linux 10 (buster)",
        ),
        string("program_name", "Program name", "kopano-server"),
        string("program_version", "Program version", "8.7.80"),
        string("server_guid", "Server GUID", raw_guid),
        string("userplugin", "User plugin", "db"),
        int("usercnt_active", "Active users", active),
        int("usercnt_contact", "Contacts", 7),
        int("usercnt_equipment", "Equipment", 0),
        int("usercnt_na_user", "Non-active users", 1),
        int("usercnt_nonactive", "Total non-active objects", 5),
        int("usercnt_room", "Rooms", 2),
        string(
            "utsname",
            "Pretty platform name",
            "Linux x86_64 4.19.0-6-amd64",
        ),
    ];
    format!(
        "{{\n\t\"stats\" : \n\t{{\n{}\n\t}},\n\t\"version\" : 2\n}}",
        entries.join(",\n")
    )
}
