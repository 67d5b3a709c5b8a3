use audit_tower::action;

#[action("team.deleted", targets("" = "id"))]
async fn delete_team() -> &'static str {
    "deleted"
}

fn main() {}
