//! The OpenAPI 3.1 document of the REST API, generated from the handlers' annotations and served
//! at `/v1/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{account, auth, friends};

#[derive(OpenApi)]
#[openapi(
    info(title = "Tavern login API", version = "1",
         description = "Accounts, sessions and friends. Every error body is {code, error, message} with a stable numeric code."),
    paths(
        auth::register, auth::login, auth::device, auth::refresh, auth::logout, auth::logout_all,
        account::get_account, account::update_account, account::change_password,
        friends::list, friends::send_request, friends::accept, friends::decline, friends::cancel,
        friends::remove, friends::block, friends::unblock,
    ),
    modifiers(&BearerAuth),
    tags((name = "auth"), (name = "account"), (name = "friends"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// `GET /v1/openapi.json`.
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
