//! A thin client for the few Stripe API calls Rookery makes, over async-stripe 1.0.
//!
//! Requests are built with async-stripe's generated request types (so paths and the
//! form encoding, `metadata[domain_id]=…`, `line_items[0][price]=…`, are Stripe's) and
//! sent by its hyper client, pointed at the configured base URL: `https://api.stripe.com/`
//! in production, a local fake in tests. Responses are decoded into small structs holding
//! only the fields Rookery reads, rather than async-stripe's full generated objects, so a
//! field Stripe adds, drops or reshapes elsewhere in an object never breaks a call.

use std::collections::HashMap;
use std::time::Duration;

use ::stripe::StripeError;
use anyhow::anyhow;
use secrecy::{ExposeSecret, SecretString};
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_billing::invoice::ListInvoice;
use stripe_billing::subscription::{
    CancelSubscription, RetrieveSubscription, UpdateSubscription, UpdateSubscriptionItems,
};
use stripe_checkout::CheckoutSessionMode;
use stripe_checkout::checkout_session::{CreateCheckoutSession, CreateCheckoutSessionLineItems};
use stripe_core::customer::CreateCustomer;

/// Stripe's production API.
pub const DEFAULT_API_BASE: &str = "https://api.stripe.com/";

/// Stripe answers in well under a second; past this something is wrong.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// At most this many invoices are listed (Stripe's page size is at most 100).
const MAX_INVOICES: usize = 500;

/// Why a Stripe call failed.
#[derive(Debug, thiserror::Error)]
pub enum StripeApiError {
    /// Stripe answered with an error object (invalid request, unknown id, bad key, …).
    #[error("Stripe refused the request (HTTP {status}, {kind}): {message}")]
    Refused {
        status: u16,
        /// Stripe's error `type`, e.g. `invalid_request_error`.
        kind: String,
        /// Stripe's error `code`, e.g. `resource_missing`, when it gave one.
        code: Option<String>,
        message: String,
    },
    /// Stripe could not be reached, or answered with something that is not Stripe's shape.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<StripeError> for StripeApiError {
    fn from(err: StripeError) -> Self {
        match err {
            StripeError::Stripe(api, status) => StripeApiError::Refused {
                status,
                kind: api.type_.as_str().to_owned(),
                code: api.code.as_ref().map(|c| c.as_str().to_owned()),
                message: api.message.clone().unwrap_or_default(),
            },
            other => StripeApiError::Internal(anyhow!(other).context("calling the Stripe API")),
        }
    }
}

/// A Stripe client for one account: its API base URL and secret key.
#[derive(Clone)]
pub struct StripeClient {
    client: ::stripe::Client,
}

impl std::fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The inner client's Debug is careful with the key, but there is nothing else to show.
        f.debug_struct("StripeClient").finish_non_exhaustive()
    }
}

/// A Checkout Session to send the customer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutSession {
    /// `cs_…`
    pub id: String,
    /// Stripe's hosted payment page for this session.
    pub url: String,
}

/// One of the customer's invoices, as the billing page lists it.
#[derive(Debug, Clone, PartialEq, Eq, miniserde::Deserialize)]
pub struct Invoice {
    /// `in_…`
    pub id: String,
    /// The number printed on the invoice; drafts have none.
    pub number: Option<String>,
    /// `draft`, `open`, `paid`, `uncollectible` or `void`.
    pub status: Option<String>,
    /// In the currency's minor unit (cents).
    pub amount_due: i64,
    /// Lower-case ISO code, e.g. `eur`.
    pub currency: String,
    /// Unix seconds.
    pub created: i64,
    /// Stripe's page where the customer views and pays the invoice.
    pub hosted_invoice_url: Option<String>,
}

/// A subscription's first item: what the customer pays for (Rookery's subscriptions have
/// one item, one unit of the domain's plan price).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionItem {
    /// `si_…`
    pub id: String,
    /// `price_…`
    pub price_id: String,
}

#[derive(miniserde::Deserialize)]
struct IdOnly {
    id: String,
}

#[derive(miniserde::Deserialize)]
struct SubscriptionWithItems {
    id: String,
    items: ItemList,
}

#[derive(miniserde::Deserialize)]
struct ItemList {
    data: Vec<ItemWithPrice>,
}

#[derive(miniserde::Deserialize)]
struct ItemWithPrice {
    id: String,
    price: IdOnly,
}

impl SubscriptionWithItems {
    fn first_item(self) -> Result<SubscriptionItem, StripeApiError> {
        let id = self.id;
        let item = self
            .items
            .data
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("Stripe returned subscription {id} without items"))?;
        Ok(SubscriptionItem {
            id: item.id,
            price_id: item.price.id,
        })
    }
}

#[derive(miniserde::Deserialize)]
struct WithUrl {
    id: String,
    url: Option<String>,
}

#[derive(miniserde::Deserialize)]
struct InvoiceList {
    data: Vec<Invoice>,
    has_more: bool,
}

impl StripeClient {
    /// A client for the API at `api_base` (for example [`DEFAULT_API_BASE`] or
    /// `http://127.0.0.1:4242/`; without the `/v1`) with the account's secret key.
    pub fn new(api_base: &str, secret_key: &SecretString) -> Result<StripeClient, StripeApiError> {
        let mut base = api_base.trim().to_owned();
        if !base.ends_with('/') {
            base.push('/');
        }
        let client = ::stripe::ClientBuilder::new(secret_key.expose_secret())
            .url(base)
            .timeout(REQUEST_TIMEOUT)
            .app_info("Rookery", Some(env!("CARGO_PKG_VERSION").to_owned()), None)
            .build()
            .map_err(|e| anyhow!(e).context("configuring the Stripe client"))?;
        Ok(StripeClient { client })
    }

    /// Creates the Stripe customer for an organisation; returns its id (`cus_…`).
    #[tracing::instrument(skip_all, fields(org_id = %org_id))]
    pub async fn create_customer(
        &self,
        email: Option<&str>,
        org_name: &str,
        org_id: &str,
    ) -> Result<String, StripeApiError> {
        let mut request = CreateCustomer::new()
            .name(org_name)
            .metadata(HashMap::from([("org_id".to_owned(), org_id.to_owned())]));
        if let Some(email) = email {
            request = request.email(email);
        }
        let customer: IdOnly = self.send(&request).await?;
        Ok(customer.id)
    }

    /// Creates a subscription-mode Checkout Session for one unit of `price_id`. The
    /// domain's id goes into the session's `client_reference_id` and `metadata`, and into
    /// the subscription's `metadata`, so every later event leads back to the domain; the
    /// plan paid for goes into both `metadata` too.
    #[tracing::instrument(skip_all, fields(customer_id = %customer_id, domain_id = %domain_id))]
    pub async fn create_checkout_session(
        &self,
        customer_id: &str,
        price_id: &str,
        success_url: &str,
        cancel_url: &str,
        domain_id: &str,
        plan_id: &str,
    ) -> Result<CheckoutSession, StripeApiError> {
        let metadata = HashMap::from([
            ("domain_id".to_owned(), domain_id.to_owned()),
            ("plan_id".to_owned(), plan_id.to_owned()),
        ]);
        let mut line_item = CreateCheckoutSessionLineItems::new();
        line_item.price = Some(price_id.to_owned());
        line_item.quantity = Some(1);
        let mut subscription_data =
            stripe_checkout::checkout_session::CreateCheckoutSessionSubscriptionData::new();
        subscription_data.metadata = Some(metadata.clone());
        let request = CreateCheckoutSession::new()
            .mode(CheckoutSessionMode::Subscription)
            .customer(customer_id)
            .line_items(vec![line_item])
            .success_url(success_url)
            .cancel_url(cancel_url)
            .client_reference_id(domain_id)
            .metadata(metadata)
            .subscription_data(subscription_data);
        let session: WithUrl = self.send(&request).await?;
        let url = session.url.ok_or_else(|| {
            anyhow!(
                "Stripe returned checkout session {} without a url",
                session.id
            )
        })?;
        Ok(CheckoutSession {
            id: session.id,
            url,
        })
    }

    /// Creates a customer-portal session; returns the URL to send the customer to.
    #[tracing::instrument(skip_all, fields(customer_id = %customer_id))]
    pub async fn create_portal_session(
        &self,
        customer_id: &str,
        return_url: &str,
    ) -> Result<String, StripeApiError> {
        let request = CreateBillingPortalSession::new()
            .customer(customer_id)
            .return_url(return_url);
        let session: WithUrl = self.send(&request).await?;
        session.url.ok_or_else(|| {
            anyhow!(
                "Stripe returned portal session {} without a url",
                session.id
            )
            .into()
        })
    }

    /// The customer's invoices, newest first (as Stripe lists them).
    #[tracing::instrument(skip_all, fields(customer_id = %customer_id))]
    pub async fn list_invoices(&self, customer_id: &str) -> Result<Vec<Invoice>, StripeApiError> {
        let mut invoices: Vec<Invoice> = Vec::new();
        loop {
            let mut request = ListInvoice::new().customer(customer_id).limit(100);
            if let Some(last) = invoices.last() {
                request = request.starting_after(last.id.as_str());
            }
            let page: InvoiceList = self.send(&request).await?;
            let got = page.data.len();
            invoices.extend(page.data);
            if !page.has_more || got == 0 || invoices.len() >= MAX_INVOICES {
                return Ok(invoices);
            }
        }
    }

    /// Cancels a subscription now (not at the period's end). Stripe then sends
    /// `customer.subscription.deleted`.
    #[tracing::instrument(skip_all, fields(subscription_id = %subscription_id))]
    pub async fn cancel_subscription(&self, subscription_id: &str) -> Result<(), StripeApiError> {
        let request = CancelSubscription::new(subscription_id);
        let _: IdOnly = self.send(&request).await?;
        Ok(())
    }

    /// The subscription's first item and its price.
    #[tracing::instrument(skip_all, fields(subscription_id = %subscription_id))]
    pub async fn subscription_item(
        &self,
        subscription_id: &str,
    ) -> Result<SubscriptionItem, StripeApiError> {
        let request = RetrieveSubscription::new(subscription_id);
        let subscription: SubscriptionWithItems = self.send(&request).await?;
        subscription.first_item()
    }

    /// Moves the subscription's item `item_id` to `price_id` (`POST /v1/subscriptions/{id}`
    /// with `items[0][id]` and `items[0][price]`; Stripe's default proration). Stripe then
    /// sends `customer.subscription.updated`. Returns the item as Stripe has it afterwards.
    #[tracing::instrument(skip_all, fields(subscription_id = %subscription_id, price_id = %price_id))]
    pub async fn change_price(
        &self,
        subscription_id: &str,
        item_id: &str,
        price_id: &str,
    ) -> Result<SubscriptionItem, StripeApiError> {
        let mut item = UpdateSubscriptionItems::new();
        item.id = Some(item_id.to_owned());
        item.price = Some(price_id.to_owned());
        let request = UpdateSubscription::new(subscription_id).items(vec![item]);
        let subscription: SubscriptionWithItems = self.send(&request).await?;
        subscription.first_item()
    }

    /// Sends a request built by async-stripe and decodes the answer as `T` instead of the
    /// request's full generated output type.
    async fn send<T: miniserde::Deserialize>(
        &self,
        request: &impl ::stripe::StripeRequest,
    ) -> Result<T, StripeApiError> {
        Ok(request.build().customize::<T>().send(&self.client).await?)
    }
}
