// The per-layer parameter layout: contiguous offsets and exactly the Hugging Face GPT-2 names and shapes.
using Xunit;

namespace L2L.Model.Tests;

public class ModelLayoutTests
{
    private static readonly GptConfig Config = new(VocabSize: 37, MaxPositions: 11, Channels: 12, Layers: 3, Heads: 3);

    [Fact]
    public void LayersAreEmbeddingBlocksHeadInOrder()
    {
        var layout = new ModelLayout(Config);
        Assert.Equal(["embedding", "h.0", "h.1", "h.2", "head"], layout.Layers.Select(l => l.Name));
        Assert.Equal([LayerKind.Embedding, LayerKind.Block, LayerKind.Block, LayerKind.Block, LayerKind.Head], layout.Layers.Select(l => l.Kind));
        Assert.Equal(Enumerable.Range(0, 5), layout.Layers.Select(l => l.Index));
        Assert.Same(layout.Layers[0], layout.Embedding);
        Assert.Same(layout.Layers[^1], layout.Head);
        Assert.Equal(layout.Layers.Skip(1).Take(3), layout.Blocks);
        Assert.Same(Config, layout.Config);
    }

    [Fact]
    public void OffsetsAreContiguousFromZero()
    {
        var layout = new ModelLayout(Config);
        foreach (var layer in layout.Layers)
        {
            long expected = 0;
            foreach (var t in layer.Tensors)
            {
                Assert.Equal(expected, t.Offset);
                Assert.Equal(t.Shape.Aggregate(1L, (a, b) => a * b), t.Length);
                expected += t.Length;
            }
            Assert.Equal(expected, layer.Length);
        }
        Assert.Equal(layout.Layers.Sum(l => l.Length), layout.TotalLength);
        Assert.Equal(Config.ParameterCount, layout.TotalLength);
    }

    [Fact]
    public void NamesAndShapesAreHuggingFaceGpt2()
    {
        const int c = 12;
        var layout = new ModelLayout(Config);
        var expected = new List<(string, int[], bool)>
        {
            ("wte.weight", [37, c], true),
            ("wpe.weight", [11, c], true),
        };
        for (var i = 0; i < 3; i++)
        {
            expected.AddRange(
            [
                ($"h.{i}.ln_1.weight", [c], false),
                ($"h.{i}.ln_1.bias", [c], false),
                ($"h.{i}.attn.c_attn.weight", [c, 3 * c], true),
                ($"h.{i}.attn.c_attn.bias", [3 * c], false),
                ($"h.{i}.attn.c_proj.weight", [c, c], true),
                ($"h.{i}.attn.c_proj.bias", [c], false),
                ($"h.{i}.ln_2.weight", [c], false),
                ($"h.{i}.ln_2.bias", [c], false),
                ($"h.{i}.mlp.c_fc.weight", [c, 4 * c], true),
                ($"h.{i}.mlp.c_fc.bias", [4 * c], false),
                ($"h.{i}.mlp.c_proj.weight", [4 * c, c], true),
                ($"h.{i}.mlp.c_proj.bias", [c], false),
            ]);
        }
        expected.Add(("ln_f.weight", [c], false));
        expected.Add(("ln_f.bias", [c], false));

        var actual = layout.Layers.SelectMany(l => l.Tensors).ToList();
        Assert.Equal(expected.Select(e => e.Item1), actual.Select(t => t.FullName));
        Assert.Equal(expected.Select(e => string.Join("x", e.Item2)), actual.Select(t => string.Join("x", t.Shape)));
        Assert.Equal(expected.Select(e => e.Item3), actual.Select(t => t.Decay));
    }

    [Fact]
    public void LookupByLocalAndFullName()
    {
        var layout = new ModelLayout(Config);
        var slot = layout.Blocks[1]["attn.c_attn.weight"];
        Assert.Equal("h.1.attn.c_attn.weight", slot.FullName);
        Assert.Equal(2L * 12, slot.Offset);
        Assert.True(layout.TryFind("h.1.attn.c_attn.weight", out var layer, out var found));
        Assert.Same(layout.Blocks[1], layer);
        Assert.Same(slot, found);
        Assert.False(layout.TryFind("h.3.ln_1.weight", out _, out _));
        Assert.Equal("wte.weight", layout.Embedding["wte.weight"].FullName);
        Assert.Equal("ln_f.bias", layout.Head["ln_f.bias"].FullName);
    }

    [Fact]
    public void UnknownLocalNameListsTheLayersTensors()
    {
        var layout = new ModelLayout(Config);
        var e = Assert.Throws<KeyNotFoundException>(() => layout.Blocks[0]["attn.c_atn.weight"]);
        Assert.Contains("attn.c_atn.weight", e.Message);
        Assert.Contains("attn.c_attn.weight", e.Message);
        Assert.Contains("h.0", e.Message);
    }

    [Fact]
    public void InvalidConfigIsRejected() =>
        Assert.Throws<InvalidDataException>(() => new ModelLayout(new GptConfig(10, 8, 10, 1, 3)));
}
