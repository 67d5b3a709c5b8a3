//! Handler attributes that name a route's WorkOS audit-log action.
//!
//! Use them through the adapters, which re-export them as `action`:
//! `#[audit_tower::action("team.created")]` for axum and `#[audit_actix::action("team.created")]`
//! for actix-web. Both are one mechanism:
//!
//! - the action name is checked at compile time (an invalid name does not compile), by evaluating
//!   `audit_core::Action::from_static` in a `const`;
//! - the attribute adds one hidden extractor argument to the handler, provided by the adapter,
//!   which finds the request's audit record (created by the adapter's layer or middleware),
//!   records the action, and turns the named path parameters into targets;
//! - a handler whose request has no audit record (the layer was forgotten) is answered by that
//!   extractor with a 500 whose body names the missing layer, so the mistake fails loudly in the
//!   first test that calls the route instead of silently emitting nothing;
//! - the attribute registers the action and the target types it names in audit-core's link-time
//!   registry (`audit_core::registry`), so that a binary or test can list every action the code
//!   can emit and compare it with what WorkOS has registered (`audit_verify::schemas`).
//!
//! Syntax:
//!
//! ```text
//! #[action("team.deleted")]
//! #[action("team.deleted", targets(team = "id"))]               // path parameter {id} → target of type "team"
//! #[action("member.removed", targets(team = "team_id", user = "user_id"))]
//! #[action("doc.shared", targets("google-doc" = "doc"))]         // string keys for types that are not identifiers
//! #[action("team.created", targets(team))]                       // a target type the handler adds itself
//! #[action("invoice.paid", targets(invoice = "id", "user"))]     // both kinds in one list
//! ```
//!
//! A target type without `= "param"` adds no target: it tells the registry which type the
//! handler's own `AuditCtx::target` calls send.
#![cfg_attr(docsrs, feature(doc_cfg))]

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::quote;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{FnArg, ItemFn, LitStr, Token, parse_macro_input, parse_quote};

/// The action attribute for axum handlers; re-exported as `audit_tower::action`.
#[proc_macro_attribute]
pub fn tower_action(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(attr, item, quote!(::audit_tower::__private))
}

/// The action attribute for actix-web handlers; re-exported as `audit_actix::action`.
#[proc_macro_attribute]
pub fn actix_action(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(attr, item, quote!(::audit_actix::__private))
}

struct TargetParam {
    kind: String,
    span: Span,
    /// The path parameter, when the target comes from the path.
    param: Option<LitStr>,
}

impl Parse for TargetParam {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let (kind, kind_span) = if input.peek(LitStr) {
            let lit = input.parse::<LitStr>()?;
            (lit.value(), lit.span())
        } else {
            let ident = input.call(syn::Ident::parse_any)?;
            (ident.to_string(), ident.span())
        };
        let param = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            Some(input.parse::<LitStr>()?)
        } else {
            None
        };
        let span = param.as_ref().map_or(kind_span, LitStr::span);
        if kind.trim().is_empty() {
            return Err(syn::Error::new(span, "the target type must not be empty"));
        }
        if param.as_ref().is_some_and(|p| p.value().is_empty()) {
            return Err(syn::Error::new(span, "the path parameter name must not be empty"));
        }
        Ok(Self { kind, span, param })
    }
}

struct Args {
    action: LitStr,
    targets: Vec<TargetParam>,
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.is_empty() {
            return Err(syn::Error::new(
                Span::call_site(),
                "expected the action name, e.g. #[action(\"team.created\")]",
            ));
        }
        let action: LitStr = input.parse()?;
        let mut targets = Vec::new();
        while !input.is_empty() {
            input.parse::<Token![,]>()?;
            if input.is_empty() {
                break;
            }
            let key: syn::Ident = input.parse()?;
            if key != "targets" {
                return Err(syn::Error::new(
                    key.span(),
                    "unknown argument; expected `targets(type = \"path_param\", other_type, ...)`",
                ));
            }
            let content;
            syn::parenthesized!(content in input);
            let list = Punctuated::<TargetParam, Token![,]>::parse_terminated(&content)?;
            targets.extend(list);
        }
        Ok(Self { action, targets })
    }
}

fn expand(attr: TokenStream, item: TokenStream, private: TokenStream2) -> TokenStream {
    let args = parse_macro_input!(attr as Args);
    let mut func = parse_macro_input!(item as ItemFn);
    match rewrite(&args, &mut func, &private) {
        Ok(()) => quote!(#func).into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn rewrite(args: &Args, func: &mut ItemFn, private: &TokenStream2) -> syn::Result<()> {
    if func.sig.asyncness.is_none() {
        return Err(syn::Error::new_spanned(
            func.sig.fn_token,
            "#[action] goes on an `async fn` handler",
        ));
    }
    if let Some(FnArg::Receiver(r)) = func.sig.inputs.first() {
        return Err(syn::Error::new_spanned(
            r,
            "#[action] handlers cannot take `self`",
        ));
    }
    let action = &args.action;
    let from_path: Vec<_> = args
        .targets
        .iter()
        .filter_map(|t| t.param.as_ref().map(|p| (LitStr::new(&t.kind, t.span), p)))
        .collect();
    let kinds = from_path.iter().map(|(k, _)| k);
    let params = from_path.iter().map(|(_, p)| p);
    let mut declared: Vec<LitStr> = Vec::new();
    for t in &args.targets {
        if !declared.iter().any(|d| d.value() == t.kind) {
            declared.push(LitStr::new(&t.kind, t.span));
        }
    }
    let annotation: FnArg = parse_quote!(__audit_annotation: #private::Annotation);
    func.sig.inputs.insert(0, annotation);
    let body = &func.block;
    let registry = quote!(#private::registry);
    *func.block = parse_quote!({
        const __AUDIT_ACTION: #private::Action = #private::Action::from_static(#action);
        // This handler's entry in the link-time registry of actions.
        #[#registry::linkme::distributed_slice(#registry::ACTIONS)]
        #[linkme(crate = #registry::linkme)]
        static __AUDIT_DECLARED: #registry::DeclaredAction = #registry::DeclaredAction::handler(
            #action,
            &[#(#declared),*],
            #registry::Origin::new(::core::module_path!(), ::core::file!(), ::core::line!()),
        );
        __audit_annotation.apply(__AUDIT_ACTION, &[#((#kinds, #params)),*]);
        #body
    });
    Ok(())
}
