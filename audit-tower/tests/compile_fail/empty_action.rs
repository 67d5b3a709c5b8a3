use audit_tower::action;

#[action("")]
async fn create_team() -> &'static str {
    "created"
}

fn main() {}
