//! The one error type of the panel's HTML handlers. Business outcomes (a form with errors)
//! are rendered by the handlers themselves; this covers what ends a request early.

use axum::{
    http::StatusCode,
    response::{Html, IntoResponse, Response},
};
use rookery_frontend::{PageCtx, pages::message};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Also what a person sees for another tenant's pages: no hint that they exist.
    #[error("not found")]
    NotFound,
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("the form was not submitted from this site, or it expired")]
    Csrf,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        AppError::Internal(anyhow::Error::new(e).context("database query"))
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, heading, text) = match &self {
            AppError::NotFound => (
                StatusCode::NOT_FOUND,
                "Page not found",
                "There is nothing here, or you do not have access to it.".to_string(),
            ),
            AppError::Forbidden(why) => (StatusCode::FORBIDDEN, "Not allowed", why.to_string()),
            AppError::BadRequest(why) => (StatusCode::BAD_REQUEST, "That did not work", why.clone()),
            AppError::Csrf => (
                StatusCode::FORBIDDEN,
                "Please try again",
                "This form was not submitted from this site or has expired. Nothing was changed. Go back, reload the page and submit it again.".to_string(),
            ),
            AppError::Internal(e) => {
                // The cause chain goes to the log once; the person sees nothing internal.
                tracing::error!(error = format!("{e:#}"), "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "We could not complete this request. Nothing was lost; please try again in a moment.".to_string(),
                )
            }
        };
        let ctx = PageCtx {
            title: heading.into(),
            page: "error",
            ..Default::default()
        };
        (
            status,
            Html(message(
                ctx,
                heading,
                text,
                Some(("/".into(), "Go to the start page")),
            )),
        )
            .into_response()
    }
}

pub type AppResult<T> = Result<T, AppError>;
