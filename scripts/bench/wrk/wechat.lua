-- Template send per request with the access token from the environment, each to another openid.
local n = 0
local token = os.getenv("WECHAT_ACCESS_TOKEN")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
    n = n + 1
    local body = '{"touser":"oBENCH' .. n .. '_' .. math.random(0, 999999) ..
        '","template_id":"Xk3vExampleTpl","data":{"thing1":{"value":"Allerta meteo"},' ..
        '"thing2":{"value":"Scuole chiuse domani"}}}'
    return wrk.format(nil, "/cgi-bin/message/template/send?access_token=" .. token, nil, body)
end
