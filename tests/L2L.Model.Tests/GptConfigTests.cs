// Config presets, parameter counts and config.json parsing.
using Xunit;

namespace L2L.Model.Tests;

public class GptConfigTests
{
    [Theory]
    [InlineData("gpt2-tiny", 224_640L)]
    [InlineData("gpt2", 124_439_808L)]
    [InlineData("gpt2-medium", 354_823_168L)]
    [InlineData("gpt2-large", 774_030_080L)]
    [InlineData("gpt2-xl", 1_557_611_200L)]
    public void PresetParameterCountsMatchGpt2WithTiedHead(string name, long expected)
    {
        var config = GptConfig.Preset(name);
        Assert.Equal(expected, config.ParameterCount);
        Assert.Equal(expected, new ModelLayout(config).TotalLength);
    }

    [Fact]
    public void PresetsHaveTheDocumentedSizes()
    {
        Assert.Equal(["gpt2-tiny", "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"], GptConfig.PresetNames);
        Assert.Equal(new GptConfig(256, 128, 64, 4, 4), GptConfig.Preset("gpt2-tiny"));
        Assert.Equal(new GptConfig(50257, 1024, 768, 12, 12), GptConfig.Preset("gpt2"));
        Assert.Equal(new GptConfig(50257, 1024, 1024, 24, 16), GptConfig.Preset("gpt2-medium"));
        Assert.Equal(new GptConfig(50257, 1024, 1280, 36, 20), GptConfig.Preset("gpt2-large"));
        Assert.Equal(new GptConfig(50257, 1024, 1600, 48, 25), GptConfig.Preset("gpt2-xl"));
        Assert.Equal(64, GptConfig.Preset("gpt2").HeadSize);
        foreach (var name in GptConfig.PresetNames) GptConfig.Preset(name).Validate();
    }

    [Fact]
    public void UnknownPresetListsTheKnownOnes()
    {
        var e = Assert.Throws<ArgumentException>(() => GptConfig.Preset("gpt3"));
        Assert.Contains("gpt3", e.Message);
        foreach (var name in GptConfig.PresetNames) Assert.Contains(name, e.Message);
    }

    [Fact]
    public void JsonRoundTripsThroughAFile()
    {
        using var dir = new TempDirectory();
        var config = new GptConfig(1000, 77, 48, 3, 6, 1e-6f);
        var path = dir.File("config.json");
        config.Save(path);
        Assert.Equal(config, GptConfig.Load(path));
        Assert.Equal(config, GptConfig.FromJson(config.ToJson()));
        Assert.Contains("\"model_type\": \"gpt2\"", config.ToJson());
        Assert.Single(Directory.GetFiles(dir.Path)); // no temp file left behind
    }

    [Fact]
    public void HuggingFaceConfigLoadsIgnoringOtherKeys()
    {
        const string json = """
            {
              "activation_function": "gelu_new",
              "architectures": ["GPT2LMHeadModel"],
              "attn_pdrop": 0.1,
              "layer_norm_epsilon": 1e-05,
              "model_type": "gpt2",
              "n_ctx": 1024,
              "n_embd": 768,
              "n_head": 12,
              "n_layer": 12,
              "n_positions": 1024,
              "task_specific_params": { "text-generation": { "do_sample": true, "max_length": 50 } },
              "vocab_size": 50257
            }
            """;
        // Of the other keys only the dropout probabilities are read (absent ones are 0).
        Assert.Equal(GptConfig.Preset("gpt2") with { Dropout = new(0f, 0.1f, 0f) }, GptConfig.FromJson(json));
    }

    [Fact]
    public void MalformedJsonNamesTheSource()
    {
        var e = Assert.Throws<InvalidDataException>(() => GptConfig.FromJson("{ \"vocab_size\": 12,, ", "my/config.json"));
        Assert.Contains("my/config.json", e.Message);
        Assert.Contains("not valid JSON", e.Message);
        Assert.Throws<InvalidDataException>(() => GptConfig.FromJson("[1, 2]"));
    }

    [Fact]
    public void MissingKeyIsNamed()
    {
        var e = Assert.Throws<InvalidDataException>(() => GptConfig.FromJson("""{"vocab_size": 10, "n_positions": 8, "n_embd": 8, "n_head": 2}""", "c.json"));
        Assert.Contains("\"n_layer\"", e.Message);
        Assert.Contains("c.json", e.Message);
    }

    [Theory]
    [InlineData("""{"vocab_size": "many", "n_positions": 8, "n_embd": 8, "n_layer": 1, "n_head": 2}""", "vocab_size")]
    [InlineData("""{"vocab_size": 10, "n_positions": 8.5, "n_embd": 8, "n_layer": 1, "n_head": 2}""", "n_positions")]
    [InlineData("""{"vocab_size": 10, "n_positions": 8, "n_embd": 8, "n_layer": 0, "n_head": 2}""", "n_layer")]
    [InlineData("""{"vocab_size": 10, "n_positions": 8, "n_embd": 10, "n_layer": 1, "n_head": 4}""", "n_head")]
    [InlineData("""{"vocab_size": 10, "n_positions": 8, "n_embd": 8, "n_layer": 1, "n_head": 2, "layer_norm_epsilon": -1}""", "layer_norm_epsilon")]
    public void InvalidValueIsNamed(string json, string key)
    {
        var e = Assert.Throws<InvalidDataException>(() => GptConfig.FromJson(json, "c.json"));
        Assert.Contains(key, e.Message);
        Assert.Contains("c.json", e.Message);
    }

    [Fact]
    public void LoadOfMissingFileSaysSo()
    {
        using var dir = new TempDirectory();
        var e = Assert.Throws<FileNotFoundException>(() => GptConfig.Load(dir.File("nope.json")));
        Assert.Contains("nope.json", e.Message);
    }

    [Fact]
    public void ValidateRejectsBadSizes()
    {
        Assert.Throws<InvalidDataException>(() => new GptConfig(0, 8, 8, 1, 2).Validate());
        Assert.Contains("multiple", Assert.Throws<InvalidDataException>(() => new GptConfig(10, 8, 10, 1, 3).Validate()).Message);
        new GptConfig(10, 8, 12, 1, 3).Validate();
    }

    [Fact]
    public void WithLayersChangesOnlyTheDepth()
    {
        var config = GptConfig.Preset("gpt2-tiny").WithLayers(7);
        Assert.Equal(7, config.Layers);
        Assert.Equal(GptConfig.Preset("gpt2-tiny") with { Layers = 7 }, config);
    }

    [Fact]
    public void DifferencesNameTheKeys()
    {
        var a = GptConfig.Preset("gpt2-tiny");
        Assert.Empty(a.Differences(a));
        var diff = a.Differences(a with { Layers = 2, Heads = 8 });
        Assert.Equal(2, diff.Count);
        Assert.Contains(diff, d => d.StartsWith("n_layer"));
        Assert.Contains(diff, d => d.StartsWith("n_head"));
    }
}
