//! `#[action]` with an action name WorkOS would refuse does not compile.

#[test]
fn invalid_action_names_do_not_compile() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/compile_fail/*.rs");
}
