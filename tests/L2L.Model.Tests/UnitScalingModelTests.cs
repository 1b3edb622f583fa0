// The unit-scaled GPT-2's config key, checkpoint flag, initialisation, learning-rate factors and scales.
using L2L.Model.Gpt2;
using Xunit;

namespace L2L.Model.Tests;

public class UnitScalingModelTests
{
    private static readonly GptConfig Standard = new(VocabSize: 50, MaxPositions: 16, Channels: 8, Layers: 2, Heads: 2);
    private static readonly GptConfig Unit = Standard with { UnitScaling = true };

    [Fact]
    public void ConfigKeyRoundTripsAndIsAbsentFromStandardConfigs()
    {
        Assert.DoesNotContain("unit_scaling", Standard.ToJson());
        Assert.Contains("\"unit_scaling\": true", Unit.ToJson());
        Assert.Equal(Unit, GptConfig.FromJson(Unit.ToJson()));
        Assert.False(GptConfig.FromJson(Standard.ToJson()).UnitScaling);
        Assert.Equal(["unit_scaling: true vs false"], Unit.Differences(Standard));
        var bad = Assert.Throws<InvalidDataException>(() => GptConfig.FromJson(Standard.ToJson().Replace("\"n_head\"", "\"unit_scaling\": 1, \"n_head\"")));
        Assert.Contains("\"unit_scaling\" must be true or false", bad.Message);
        var dropout = Assert.Throws<InvalidDataException>(() => GptConfig.FromJson(Unit.ToJson().Replace("\"n_head\"", "\"resid_pdrop\": 0.1, \"n_head\"")));
        Assert.Contains("unit_scaling does not support dropout", dropout.Message);
    }

    [Fact]
    public void CheckpointRecordsTheFlagAndRefusesTheOtherKindInOneLine()
    {
        using var tmp = new TempDirectory();
        foreach (var (saved, asked) in new[] { (Unit, Standard), (Standard, Unit) })
        {
            var dir = tmp.File(saved.UnitScaling ? "unit" : "standard");
            var layout = new ModelLayout(saved);
            var layers = Models.Initialize(layout, 3);
            Checkpoint.Save(dir, layout, layers);
            var (config, loaded) = Checkpoint.Load(dir);
            Assert.Equal(saved, config);
            Assert.Equal(layers.SelectMany(l => l), loaded.SelectMany(l => l));
            Assert.Equal(saved, Checkpoint.Load(dir, saved).Config);

            var e = Assert.Throws<InvalidDataException>(() => Checkpoint.Load(dir, asked));
            Assert.DoesNotContain('\n', e.Message);
            Assert.Contains(saved.UnitScaling ? "holds a unit-scaled GPT-2" : "holds a standard GPT-2", e.Message);
            Assert.Contains(asked.UnitScaling ? "a unit-scaled model was asked for" : "a standard model was asked for", e.Message);
        }
    }

    [Fact]
    public void UnitScaledWeightsAreStandardNormalAndTheMlpOutputBiasCancelsGelusMean()
    {
        var config = new GptConfig(VocabSize: 256, MaxPositions: 64, Channels: 64, Layers: 2, Heads: 4) { UnitScaling = true };
        var layout = new ModelLayout(config);
        var layers = Models.Initialize(layout, 7);
        foreach (var name in new[] { "wte.weight", "wpe.weight", "h.0.attn.c_attn.weight", "h.1.attn.c_proj.weight", "h.0.mlp.c_fc.weight", "h.1.mlp.c_proj.weight" })
        {
            Assert.True(layout.TryFind(name, out var layer, out var slot));
            var values = LayerLayout.Slice(layers[layer.Index], slot).ToArray().Select(v => (double)v).ToArray();
            var mean = values.Average();
            var std = Math.Sqrt(values.Sum(v => (v - mean) * (v - mean)) / values.Length);
            Assert.InRange(mean, -0.05, 0.05);
            Assert.InRange(std, 0.97, 1.03);
        }
        // The bias is what E[gelu] = 0.282, times the GELU factor and 1/sqrt(4C), sends through the down-projection's columns.
        var block = layout.Blocks[0];
        var w = LayerLayout.Slice(layers[block.Index], block["mlp.c_proj.weight"]).ToArray();
        var bias = LayerLayout.Slice(layers[block.Index], block["mlp.c_proj.bias"]).ToArray();
        var scales = UnitScales.For(config, 1, 1);
        for (var c = 0; c < 64; c++)
        {
            var column = Enumerable.Range(0, 256).Sum(j => (double)w[j * 64 + c]);
            Assert.Equal(-0.2821 * scales.Gelu / 16 * column, bias[c], 2e-3 * Math.Max(1, Math.Abs(column) / 16));
        }
        // Initialising one layer alone (as a param server does) gives the same values, the bias included.
        var alone = new float[block.Length];
        Models.LayerInitializer(layout, 7)(block.Index, alone);
        Assert.Equal(layers[block.Index], alone);
        // The standard model is unchanged: std 0.02 and zero biases.
        var standard = Models.Initialize(new ModelLayout(config with { UnitScaling = false }), 7);
        Assert.All(LayerLayout.Slice(standard[block.Index], block["mlp.c_proj.bias"]).ToArray(), b => Assert.Equal(0f, b));
    }

    [Fact]
    public void GrowingAUnitScaledModelIsRefused()
    {
        var layout = new ModelLayout(Unit);
        var e = Assert.Throws<ArgumentException>(() => ModelGrowth.Grow(Unit, Models.Initialize(layout, 1), 3, GrowthPlacement.Top, 2));
        Assert.Contains("unit-scaled", e.Message);
    }

    [Fact]
    public void LearningRateFactorsFollowEachWeightsForwardScale()
    {
        var layout = new ModelLayout(Unit);
        var factors = layout.Layers.SelectMany(l => l.Tensors).ToDictionary(t => t.FullName, t => t.LearningRateScale);
        var c = Unit.Channels;
        Assert.Equal(MathF.Sqrt(c), factors["wte.weight"]);
        Assert.Equal(MathF.Sqrt(2), factors["wpe.weight"]);
        Assert.Equal(MathF.Sqrt(c), factors["h.1.attn.c_attn.weight"]);
        Assert.Equal(MathF.Sqrt(c), factors["h.1.attn.c_proj.weight"]);
        Assert.Equal(MathF.Sqrt(c), factors["h.0.mlp.c_fc.weight"]);
        Assert.Equal(MathF.Sqrt(4 * c), factors["h.0.mlp.c_proj.weight"]);
        foreach (var name in new[] { "h.0.ln_1.weight", "h.0.ln_2.bias", "h.1.attn.c_attn.bias", "h.1.mlp.c_proj.bias", "ln_f.weight" })
            Assert.Equal(1f, factors[name]);
        Assert.All(new ModelLayout(Standard).Layers.SelectMany(l => l.Tensors), t => Assert.Equal(1f, t.LearningRateScale));
    }

    [Fact]
    public void ScalesFollowTheRules()
    {
        var s = UnitScales.For(new GptConfig(VocabSize: 256, MaxPositions: 64, Channels: 64, Layers: 4, Heads: 4) { UnitScaling = true }, 4, 64);
        Assert.True(s.Enabled);
        Assert.Equal(1 / MathF.Sqrt(64), s.QkvProjection.Output);
        Assert.Equal(1 / MathF.Sqrt(192), s.QkvProjection.InputGrad);
        Assert.Equal(1 / MathF.Sqrt(256), s.MlpDown.Output);
        Assert.Equal(1 / MathF.Sqrt(64), s.MlpDown.InputGrad);
        Assert.Equal(1 / 16f, s.MlpUp.WeightGrad); // 1/sqrt(4 x 64 tokens)
        Assert.Equal(1 / MathF.Sqrt(256), s.Head.InputGrad);
        Assert.Equal(256 / MathF.Sqrt(255), s.CrossEntropyGrad, 1e-5f);
        Assert.Equal(1 / 16f, s.LayerNormParamGrad);
        Assert.Equal(1f, s.TokenGrad); // sqrt(256 / 256)
        Assert.Equal(0.5f, s.PositionGrad);
        // GELU: 1/sqrt(0.588 * 0.675) from the standard normal's moments of GPT-2's tanh GELU.
        Assert.Equal(1 / Math.Sqrt(0.588 * 0.675), s.Gelu, 0.01);
        // Residual adds keep unit variance forward (a^2 + b^2 = 1) and backward (SkipGrad^2 + BranchGrad^2 = 1).
        for (var block = 0; block < 4; block++)
        {
            var (attention, mlp) = s.Residual(block);
            foreach (var add in new[] { attention, mlp })
            {
                Assert.Equal(1f, add.Skip * add.Skip + add.Branch * add.Branch, 1e-6f);
                Assert.Equal(1f, add.SkipGrad * add.SkipGrad + add.BranchGrad * add.BranchGrad, 1e-6f);
            }
            Assert.Equal(0.01f, attention.Branch * attention.Branch, 1e-6f);
            Assert.Equal(1f / (block + 2), mlp.Branch * mlp.Branch, 1e-6f);
            // The attention split undoes the branch's 1/sqrt(3) drift: BranchGrad / SkipGrad = sqrt(3) Branch / Skip.
            Assert.Equal(MathF.Sqrt(3) * attention.Branch / attention.Skip, attention.BranchGrad / attention.SkipGrad, 1e-5f);
        }
        Assert.Same(UnitScales.Standard, UnitScales.For(Standard, 4, 8));
    }
}
