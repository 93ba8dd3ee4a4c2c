package main

import (
	"fmt"
	"image/color"
	"math"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

func init() {
	// Sans-serif reads better at the small sizes of bar labels; plot.New
	// and plot.NewLegend take their fonts from here.
	plot.DefaultFont = font.Font{Typeface: "Liberation", Variant: "Sans"}
}

// Sizes of the figure.
const (
	barWidth    = 0.17 * vg.Inch // one bar
	groupFill   = 0.8            // the part of a group's slot its bars take
	figHeight   = 8 * vg.Inch
	minPlotArea = 6 * vg.Inch
	maxPlotArea = 18 * vg.Inch
	legendPad   = 0.25 * vg.Inch
)

// palette colours the transports that are not ceilings, in order (Okabe
// and Ito's colours, told apart with most kinds of colour blindness);
// greys colour the ceilings.
var (
	palette = []color.Color{
		rgb(0x00, 0x72, 0xb2), rgb(0xe6, 0x9f, 0x00), rgb(0x00, 0x9e, 0x73),
		rgb(0xd5, 0x5e, 0x00), rgb(0xcc, 0x79, 0xa7), rgb(0x56, 0xb4, 0xe9),
		rgb(0xf0, 0xe4, 0x42), rgb(0x6a, 0x3d, 0x9a), rgb(0x8c, 0x56, 0x4b),
	}
	greys = []color.Color{rgb(0x8c, 0x8c, 0x8c), rgb(0xbd, 0xbd, 0xbd), rgb(0x52, 0x52, 0x52)}
	red   = rgb(0xc0, 0x00, 0x00)
)

func rgb(r, g, b uint8) color.Color { return color.RGBA{R: r, G: g, B: b, A: 0xff} }

// colors gives every series its colour.
func colors(ss []series) []color.Color {
	out := make([]color.Color, len(ss))
	p, g := 0, 0
	for i, s := range ss {
		if s.ceiling {
			out[i] = greys[g%len(greys)]
			g++
		} else {
			out[i] = palette[p%len(palette)]
			p++
		}
	}
	return out
}

// newSVGCanvas returns a canvas sized for d: as wide as its groups of bars
// need, plus the legend.
func newSVGCanvas(d *chartData) *vgsvg.Canvas {
	w, _ := figureSize(d)
	return vgsvg.New(w, figHeight)
}

// figureSize returns the width of the figure and of its legend.
func figureSize(d *chartData) (width, legendW vg.Length) {
	l := legend(d, colors(d.series))
	for _, s := range d.series {
		legendW = max(legendW, l.TextStyle.Width(legendLabel(s)))
	}
	// A fifth more than the text needs in Liberation Sans, the font the
	// SVG names, for viewers that substitute a wider one.
	legendW = legendW*1.2 + l.ThumbnailWidth + l.TextStyle.Width(" ") + 2*legendPad
	slot := vg.Length(len(d.series)) * barWidth / groupFill
	area := min(max(vg.Length(len(d.groups))*slot+vg.Inch, minPlotArea), maxPlotArea)
	return area + legendW, legendW
}

// render draws d on c: the title, the two panels below it, aligned, and the
// legend to their right.
func render(c vg.CanvasSizer, d *chartData) {
	dc := draw.New(c)
	dc.FillPolygon(color.White, []vg.Point{
		{X: dc.Min.X, Y: dc.Min.Y}, {X: dc.Min.X, Y: dc.Max.Y},
		{X: dc.Max.X, Y: dc.Max.Y}, {X: dc.Max.X, Y: dc.Min.Y},
	})
	cols := colors(d.series)
	_, legendW := figureSize(d)

	title := text.Style{
		Color:   color.Black,
		Font:    font.From(plot.DefaultFont, 13),
		XAlign:  draw.XCenter,
		YAlign:  draw.YTop,
		Handler: plot.DefaultTextHandler,
	}
	header := title.Height(d.title) + 0.25*vg.Inch
	dc.FillText(title, vg.Point{X: (dc.Min.X + dc.Max.X) / 2, Y: dc.Max.Y - 0.12*vg.Inch}, d.title)

	plots := draw.Crop(dc, 0, -legendW, 0, -header)
	legendArea := draw.Crop(dc, dc.Max.X-dc.Min.X-legendW+legendPad, -legendPad, 0, -header-0.2*vg.Inch)

	top := panel(d, cols, false)
	top.Title.Text = "messages per second (log scale)"
	top.Y.Label.Text = "messages/s"
	bottom := panel(d, cols, true)
	bottom.Title.Text = "divided by the ceiling of the same run and workload (log scale)"
	bottom.Y.Label.Text = "÷ ceiling"
	bottom.X.Label.Text = "payload size, client connections, writer goroutines per connection (one unless shown)"
	for _, p := range []*plot.Plot{top, bottom} {
		p.Title.TextStyle.Font.Size = 11
		p.Title.Padding = 6
	}

	tiles := draw.Tiles{Rows: 2, Cols: 1, PadLeft: 6, PadRight: 6, PadBottom: 6, PadY: 18}
	canvases := plot.Align([][]*plot.Plot{{top}, {bottom}}, tiles, plots)
	top.Draw(canvases[0][0])
	bottom.Draw(canvases[1][0])
	l := legend(d, cols)
	l.Draw(legendArea)
}

// legend returns the legend of d's series.
func legend(d *chartData, cols []color.Color) plot.Legend {
	l := plot.NewLegend()
	l.Top, l.Left = true, true
	l.TextStyle.Font.Size = 11
	l.ThumbnailWidth = 0.3 * vg.Inch
	l.Padding = 3
	for i, s := range d.series {
		l.Add(legendLabel(s), swatch{cols[i]})
	}
	return l
}

func legendLabel(s series) string {
	if s.ceiling {
		return s.label + " (ceiling)"
	}
	return s.label
}

// swatch is a legend thumbnail: a square of a series' colour.
type swatch struct{ color color.Color }

func (s swatch) Thumbnail(c *draw.Canvas) {
	h := c.Max.Y - c.Min.Y
	x0 := c.Min.X + (c.Max.X-c.Min.X-h)/2
	c.FillPolygon(s.color, []vg.Point{
		{X: x0, Y: c.Min.Y}, {X: x0, Y: c.Max.Y},
		{X: x0 + h, Y: c.Max.Y}, {X: x0 + h, Y: c.Min.Y},
	})
}

// panel returns one panel: messages per second, or with ratio the fraction
// of the ceiling, on a log scale, one group of bars per workload.
func panel(d *chartData, cols []color.Color, ratio bool) *plot.Plot {
	p := plot.New()
	p.X.Min, p.X.Max = -0.5, float64(len(d.groups))-0.5
	var ticks []plot.Tick
	for i, w := range d.groups {
		ticks = append(ticks, plot.Tick{Value: float64(i), Label: w.label()})
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	p.X.Tick.Length = 0
	p.X.Tick.Label.Font.Size = 10

	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range d.series {
		for _, v := range values(s, ratio) {
			if !math.IsNaN(v) {
				lo, hi = min(lo, v), max(hi, v)
			}
		}
	}
	if math.IsInf(lo, 1) { // nothing to draw: an empty decade
		lo, hi = 1, 1
	}
	// From a whole decade at least half a decade below the shortest bar,
	// so that it does not read as none, to room above the tallest bar for
	// its label.
	p.Y.Min = math.Pow(10, math.Floor(math.Log10(lo/math.Sqrt(10))))
	p.Y.Max = hi * 4
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = decades{}
	p.Y.Tick.Label.Font.Size = 10

	grid := plotter.NewGrid()
	grid.Vertical.Color = nil
	grid.Horizontal.Color = color.Gray{Y: 0xdd}
	p.Add(grid, separators(len(d.groups)))
	for i, s := range d.series {
		p.Add(&bars{
			vals:   values(s, ratio),
			failed: s.failed,
			k:      i,
			n:      len(d.series),
			color:  cols[i],
			labels: !(ratio && s.ceiling),
			ratio:  ratio,
		})
	}
	return p
}

func values(s series, ratio bool) []float64 {
	if ratio {
		return s.ratio
	}
	return s.msgs
}

// bars draws one series: one bar per group, from the bottom of the axis, at
// the series' place within the group, with its value above it, and a note
// where the value is missing.
type bars struct {
	vals   []float64 // NaN: missing
	failed []bool    // missing because the cell failed
	k, n   int       // this series' place among n
	color  color.Color
	labels bool // write each bar's value
	ratio  bool // values are fractions, not counts
}

func (b *bars) Plot(c draw.Canvas, p *plot.Plot) {
	trX, trY := p.Transforms(&c)
	w := groupFill / float64(b.n)
	small := text.Style{
		Color:    color.Black,
		Font:     font.From(plot.DefaultFont, 7),
		Rotation: math.Pi / 2,
		XAlign:   draw.XLeft,
		YAlign:   draw.YCenter,
		Handler:  p.TextHandler,
	}
	for g, v := range b.vals {
		x0 := trX(float64(g) - groupFill/2 + float64(b.k)*w)
		x1 := trX(float64(g) - groupFill/2 + float64(b.k+1)*w)
		mid := (x0 + x1) / 2
		y0 := trY(p.Y.Min)
		if math.IsNaN(v) {
			note := small
			note.Color = color.Gray{Y: 0x80}
			s := "n/a"
			if b.failed[g] {
				note.Color, s = red, "error"
			}
			c.FillText(note, vg.Point{X: mid, Y: y0 + 2}, s)
			continue
		}
		y1 := trY(v)
		c.FillPolygon(b.color, c.ClipPolygonY([]vg.Point{
			{X: x0, Y: y0}, {X: x0, Y: y1}, {X: x1, Y: y1}, {X: x1, Y: y0},
		}))
		if b.labels {
			c.FillText(small, vg.Point{X: mid, Y: y1 + 2}, valueLabel(v, b.ratio))
		}
	}
}

// separators draws faint lines between groups.
type separators int

func (n separators) Plot(c draw.Canvas, p *plot.Plot) {
	trX, _ := p.Transforms(&c)
	sty := draw.LineStyle{Color: color.Gray{Y: 0xcc}, Width: 0.5}
	for g := 1; g < int(n); g++ {
		x := trX(float64(g) - 0.5)
		c.StrokeLine2(sty, x, c.Min.Y, x, c.Max.Y)
	}
}

// valueLabel writes a bar's value in three significant digits: with K, M or
// G for counts, plainly for fractions.
func valueLabel(v float64, ratio bool) string {
	if ratio {
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
	for _, u := range []struct {
		div    float64
		suffix string
	}{{1e9, "G"}, {1e6, "M"}, {1e3, "K"}} {
		if v >= u.div {
			return strconv.FormatFloat(v/u.div, 'g', 3, 64) + u.suffix
		}
	}
	return fmt.Sprintf("%.3g", v)
}

// decades ticks a log axis: labelled major ticks at powers of ten, in the
// style of valueLabel, and minor ticks at 2 to 9 times them.
type decades struct{}

func (decades) Ticks(lo, hi float64) []plot.Tick {
	var ticks []plot.Tick
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		v := math.Pow(10, e)
		if v >= lo*(1-1e-9) && v <= hi*(1+1e-9) {
			ticks = append(ticks, plot.Tick{Value: v, Label: decadeLabel(v)})
		}
		for m := 2.0; m < 10; m++ {
			if mv := m * v; mv > lo && mv < hi {
				ticks = append(ticks, plot.Tick{Value: mv})
			}
		}
	}
	return ticks
}

func decadeLabel(v float64) string {
	if v < 1 {
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
	return valueLabel(v, false)
}
