package redisapi

import (
	"encoding/binary"
	"strconv"
	"strings"
)

// tableFormat names the layout of RING.TABLE's reply; a client that does not
// know it must not use the table.
const tableFormat = "ringman-table/1"

// maxTableInstances is the most instances a table can index: entries are
// 16-bit.
const maxTableInstances = 1 << 16

// cmdRingTable answers RING.TABLE [service [epoch]]: the whole answer
// function of a service (router.Export), for routers that answer lookups
// themselves (nginx/ringman.lua). It is nil when the caller's epoch is
// current, so polling an unchanged table costs one short reply. Otherwise it
// is an array of eight bulk strings:
//
//	1 "ringman-table/1"
//	2 epoch, 16 hex digits
//	3 the key hash, "xxhash64"
//	4 partitions P, decimal (0: no live instance)
//	5 width W (candidates per partition), decimal
//	6 the instances, one per line ("\n"-terminated)
//	7 the table: P×W little-endian uint16 indexes into the instances; a key's
//	  candidates, owner first, are row hash(key) % P
//	8 the overrides, "host\tbackend\n" per entry, sorted by host
//
// An empty service (or none) is the connection's service (SELECT).
func (c *conn) cmdRingTable(args [][]byte) {
	if len(args) > 3 {
		c.errorReply("ERR syntax error")
		return
	}
	service := c.service
	if len(args) > 1 && len(args[1]) > 0 {
		service = string(args[1])
	}
	e, err := c.s.router.Export(service)
	if err != nil {
		c.errorReply("ERR " + err.Error())
		return
	}
	if len(e.Instances) > maxTableInstances {
		c.errorReply("ERR " + strconv.Itoa(len(e.Instances)) + " instances: a table indexes at most 65536")
		return
	}
	epoch := strconv.FormatUint(e.Epoch, 16)
	epoch = strings.Repeat("0", 16-len(epoch)) + epoch
	if len(args) > 2 && string(args[2]) == epoch {
		c.out = append(c.out, replyNil...)
		return
	}
	c.out = appendArray(c.out, 8)
	c.out = appendBulkString(c.out, tableFormat)
	c.out = appendBulkString(c.out, epoch)
	c.out = appendBulkString(c.out, e.Hash)
	c.out = appendBulkString(c.out, strconv.Itoa(e.Partitions))
	c.out = appendBulkString(c.out, strconv.Itoa(e.Width))

	var b []byte
	for _, inst := range e.Instances {
		b = append(append(b, inst...), '\n')
	}
	c.out = appendBulk(c.out, b)

	b = make([]byte, 0, 2*len(e.Table))
	for _, v := range e.Table {
		b = binary.LittleEndian.AppendUint16(b, uint16(v))
	}
	c.out = appendBulk(c.out, b)

	b = b[:0]
	for i, h := range e.OverrideHosts {
		b = append(append(append(append(b, h...), '\t'), e.OverrideBackends[i]...), '\n')
	}
	c.out = appendBulk(c.out, b)
}
