-- wrk script for benches/load/compare.sh: a realistic mix of visits and link-preview fetches.
--
-- Every request is formatted once, in init(); request() only hands out the next one, so wrk
-- spends as little CPU as possible per request. DL_COOKIE (optional) is a returning visitor's
-- `dl_first=…; dl_last=…` pair minted by the darklight under test, so the signed-cookie
-- verification path is exercised too. done() prints one machine-readable RESULT line.

local android_chrome = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36"
local android_webview = "Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/UQ1A.240105.004; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/131.0.0.0 Mobile Safari/537.36"
local iphone_safari = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
local desktop_chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
local mac_safari = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15"
local accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"

local returning = os.getenv("DL_COOKIE") or ""
local other_cookies = "_ga=GA1.2.1234567890.1789000000; session=9f8e7d6c5b4a39281706f5e4d3c2b1a0"

-- {path, headers}; paths share a few articles so previews and later visits correlate.
local sets = {
  {"/articles/2026/11/the-recipe-everyone-forwarded", {["User-Agent"] = "WhatsApp/2.23.20.0 A"}},
  {"/articles/2026/11/the-recipe-everyone-forwarded", {["User-Agent"] = android_webview .. " WhatsApp/2.24.1.78", ["X-Requested-With"] = "com.whatsapp", ["Sec-Fetch-Site"] = "none"}},
  {"/articles/2026/11/the-recipe-everyone-forwarded", {["User-Agent"] = iphone_safari, ["Sec-Fetch-Site"] = "none", ["Sec-Fetch-Mode"] = "navigate"}},
  {"/articles/2026/10/a-field-guide-to-link-previews", {["User-Agent"] = desktop_chrome, ["Referer"] = "https://www.google.com/", ["Sec-Fetch-Site"] = "cross-site"}},
  {"/articles/2026/10/a-field-guide-to-link-previews?fbclid=IwAR2x0abcdefghijklmnop", {["User-Agent"] = android_webview .. " [FB_IAB/FB4A;FBAV/460.0.0.48.109;]", ["X-Requested-With"] = "com.facebook.katana", ["Referer"] = "https://l.facebook.com/"}},
  {"/articles/2026/10/a-field-guide-to-link-previews", {["User-Agent"] = "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"}},
  {"/articles/2026/10/a-field-guide-to-link-previews", {["User-Agent"] = mac_safari, ["Referer"] = "https://app.slack.com/"}},
  {"/", {["User-Agent"] = desktop_chrome, ["Sec-Fetch-Site"] = "none", ["Cookie"] = other_cookies}},
  {"/news/", {["User-Agent"] = android_chrome, ["Referer"] = "https://news.example.com/", ["Cookie"] = other_cookies}},
  {"/articles/2026/09/why-nobody-sees-dark-social?utm_source=newsletter&utm_medium=email&utm_campaign=weekly", {["User-Agent"] = mac_safari}},
  {"/articles/2026/09/why-nobody-sees-dark-social", {["User-Agent"] = iphone_safari, ["Referer"] = "https://t.co/AbCdEf123"}},
  {"/articles/2026/09/why-nobody-sees-dark-social", {["User-Agent"] = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_1) AppleWebKit/601.2.4 (KHTML, like Gecko) Version/9.0.1 Safari/601.2.4 facebookexternalhit/1.1 Facebot Twitterbot/1.0"}},
  {"/articles/2026/09/why-nobody-sees-dark-social", {["User-Agent"] = android_chrome, ["Sec-Fetch-Site"] = "none", ["Cookie"] = other_cookies .. (returning ~= "" and ("; " .. returning) or "")}},
  {"/tech/", {["User-Agent"] = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"}},
  {"/articles/2026/11/the-recipe-everyone-forwarded?gclid=Cj0KCQiA-abcdef", {["User-Agent"] = desktop_chrome, ["Referer"] = "https://www.google.com/"}},
  {"/articles/2026/08/sms-links-are-back", {["User-Agent"] = android_chrome, ["Referer"] = "android-app://com.google.android.apps.messaging/"}},
}

local requests = {}
local counter = 0

function init(args)
  for i, set in ipairs(sets) do
    local headers = set[2]
    headers["Host"] = "news.example.com"
    headers["Accept"] = accept
    headers["Accept-Language"] = "en-GB,en;q=0.9"
    requests[i] = wrk.format("GET", set[1], headers)
  end
end

function request()
  counter = counter % #requests + 1
  return requests[counter]
end

-- WRK_DELAY_MS (set by compare.sh from RATE): each connection pauses before each request, so
-- wrk holds a request rate instead of going as fast as the proxy answers. The pauses are
-- exponentially distributed around that mean (wrk takes whole milliseconds): equal pauses would
-- line every connection up into bursts, and the latency would measure how fast a proxy drains a
-- burst rather than what it adds to a request.
local delay_ms = tonumber(os.getenv("WRK_DELAY_MS") or "0") or 0
if delay_ms > 0 then
  math.randomseed(os.time())
  function delay()
    return math.floor(-math.log(1 - math.random()) * delay_ms + 0.5)
  end
end

function done(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format("RESULT %d %.1f %d %d %d\n",
    summary.requests, summary.duration / 1e6 > 0 and summary.requests / (summary.duration / 1e6) or 0,
    latency:percentile(50), latency:percentile(99), errors))
end
