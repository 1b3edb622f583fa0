// GPT-2 initialisation: the right distributions per tensor, and per-layer determinism.
using Xunit;

namespace L2L.Model.Tests;

public class GptInitTests
{
    private static readonly GptConfig Config = new(VocabSize: 512, MaxPositions: 64, Channels: 64, Layers: 6, Heads: 4);

    private static (double Mean, double Std) Stats(ReadOnlySpan<float> values)
    {
        double sum = 0, sumSq = 0;
        foreach (var v in values)
        {
            sum += v;
            sumSq += (double)v * v;
        }
        var mean = sum / values.Length;
        return (mean, Math.Sqrt(sumSq / values.Length - mean * mean));
    }

    [Fact]
    public void TensorsGetGpt2Distributions()
    {
        var layout = new ModelLayout(Config);
        var layers = GptInit.Create(layout, seed: 42);
        Assert.Equal(layout.Layers.Count, layers.Length);
        var residualStd = 0.02 / Math.Sqrt(2 * Config.Layers);
        foreach (var layer in layout.Layers)
        {
            Assert.Equal(layer.Length, layers[layer.Index].Length);
            foreach (var slot in layer.Tensors)
            {
                var values = LayerLayout.Slice(layers[layer.Index], slot);
                var name = slot.LocalName;
                if (name.StartsWith("ln_") && name.EndsWith(".weight"))
                    Assert.All(values.ToArray(), v => Assert.Equal(1f, v));
                else if (name.EndsWith(".bias"))
                    Assert.All(values.ToArray(), v => Assert.Equal(0f, v));
                else
                {
                    var std = name.EndsWith("c_proj.weight") ? residualStd : 0.02;
                    var (mean, actualStd) = Stats(values);
                    // 4096+ samples: the sample std is within a few percent; the mean within a few std/sqrt(n).
                    Assert.InRange(actualStd, std * 0.93, std * 1.07);
                    Assert.InRange(mean, -5 * std / Math.Sqrt(values.Length), 5 * std / Math.Sqrt(values.Length));
                }
            }
        }
    }

    [Fact]
    public void ResidualProjectionsAreScaledDown()
    {
        var layout = new ModelLayout(Config);
        var block = layout.Blocks[2];
        var data = new float[block.Length];
        GptInit.InitializeLayer(block, data, Config, seed: 3);
        var fc = Stats(LayerLayout.Slice(data, block["mlp.c_fc.weight"])).Std;
        var proj = Stats(LayerLayout.Slice(data, block["mlp.c_proj.weight"])).Std;
        var attnProj = Stats(LayerLayout.Slice(data, block["attn.c_proj.weight"])).Std;
        Assert.InRange(fc / proj, Math.Sqrt(12) * 0.9, Math.Sqrt(12) * 1.1);
        Assert.InRange(fc / attnProj, Math.Sqrt(12) * 0.85, Math.Sqrt(12) * 1.15);
    }

    [Fact]
    public void SameSeedSameValuesAndEachLayerStandsAlone()
    {
        var layout = new ModelLayout(Config);
        var a = GptInit.Create(layout, seed: 7);
        var b = GptInit.Create(layout, seed: 7);
        for (var i = 0; i < a.Length; i++) Assert.Equal(a[i], b[i]);

        // A layer initialised on its own equals the same layer of the whole model.
        var block = layout.Blocks[4];
        var alone = new float[block.Length];
        GptInit.InitializeLayer(block, alone, Config, seed: 7);
        Assert.Equal(a[block.Index], alone);

        // Different layers, and different seeds, give different values.
        var c = GptInit.Create(layout, seed: 8);
        Assert.NotEqual(a[1], c[1]);
        Assert.NotEqual(a[1].AsSpan(0, 200).ToArray(), a[2].AsSpan(0, 200).ToArray());
        Assert.NotEqual(
            LayerLayout.Slice(a[1], block["attn.c_attn.weight"]).ToArray(),
            LayerLayout.Slice(a[2], block["attn.c_attn.weight"]).ToArray());
    }

    [Fact]
    public void LayersLongerThanOneChunkMatchWhenInitialisedAlone()
    {
        // wte alone spans several generator chunks, which Create fills in parallel.
        var config = Config with { VocabSize = 3001 };
        var layout = new ModelLayout(config);
        Assert.True(layout.Embedding.Length > 2 * GptInit.ChunkLength);
        var all = GptInit.Create(layout, seed: 11);
        var alone = new float[layout.Embedding.Length];
        GptInit.InitializeLayer(layout.Embedding, alone, config, seed: 11);
        Assert.Equal(all[0], alone);
        // Consecutive chunks are different streams.
        Assert.NotEqual(alone.AsSpan(0, 100).ToArray(), alone.AsSpan(GptInit.ChunkLength, 100).ToArray());
    }

    [Fact]
    public void ShallowerModelSharesTheEmbedding()
    {
        // The embedding's generator depends on (seed, layer index) only, not on depth.
        var deep = GptInit.Create(new ModelLayout(Config), seed: 5);
        var shallow = GptInit.Create(new ModelLayout(Config.WithLayers(2)), seed: 5);
        Assert.Equal(deep[0], shallow[0]);
    }

    [Fact]
    public void WrongBufferLengthIsRejected()
    {
        var layout = new ModelLayout(Config);
        Assert.Throws<ArgumentException>(() => GptInit.InitializeLayer(layout.Head, new float[3], Config, 0));
    }
}
